/** The daemon's own Prometheus families: counters, gauges, histograms, and the text they write. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Registry } from '../../src/telemetry/metric-families.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';

/** A label value as the exposition escapes it, read back. */
function unescapeLabel(raw: string): string {
  return raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

describe('metric families', () => {
  test('a family without labels has its one series at 0 until set; a labelled one only what it was given', () => {
    const registry = new Registry();
    registry.counter({ name: 'c_total', help: 'c' });
    registry.gauge({ name: 'g', help: 'g' });
    const labelled = registry.counter({ name: 'l_total', help: 'l', labelNames: ['kind'] });
    let e = parseExposition(registry.text());
    assert.equal(sampleValue(e, 'c_total'), 0);
    assert.equal(sampleValue(e, 'g'), 0);
    assert.equal(e.types.get('l_total'), 'counter');
    assert.equal(e.samples.filter((s) => s.name === 'l_total').length, 0);
    labelled.inc({ kind: 'a' });
    labelled.inc({ kind: 'a' }, 2);
    labelled.inc({ kind: 'b' }, 0);
    e = parseExposition(registry.text());
    assert.equal(sampleValue(e, 'l_total', { kind: 'a' }), 3);
    assert.equal(sampleValue(e, 'l_total', { kind: 'b' }), 0);
  });

  test('a counter cannot go down; an unknown label name is refused', () => {
    const registry = new Registry();
    const c = registry.counter({ name: 'c_total', help: 'c', labelNames: ['kind'] });
    assert.throws(() => c.inc({ kind: 'a' }, -1), /cannot go down/);
    assert.throws(() => c.inc({ kind: 'a' }, Number.NaN), /cannot go down/);
    assert.throws(() => c.inc({ other: 'a' }), /has no label other/);
  });

  test('collect sets the values of a state at every scrape; reset forgets series', () => {
    const registry = new Registry();
    let state = 'a';
    registry.gauge({
      name: 'state',
      help: 's',
      labelNames: ['state'],
      collect: (f) => {
        f.reset();
        f.set({ state }, 1);
      },
    });
    assert.equal(sampleValue(parseExposition(registry.text()), 'state', { state: 'a' }), 1);
    state = 'b';
    const e = parseExposition(registry.text());
    assert.equal(sampleValue(e, 'state', { state: 'a' }), undefined);
    assert.equal(sampleValue(e, 'state', { state: 'b' }), 1);
  });

  test('histograms: cumulative buckets, +Inf, sum and count; zero() makes the series exist', () => {
    const registry = new Registry();
    const h = registry.histogram({ name: 'd_seconds', help: 'd', labelNames: ['method'], buckets: [1, 0.1, 0.5] });
    h.zero({ method: 'idle' });
    for (const v of [0.05, 0.2, 0.2, 0.7, 3]) h.observe({ method: 'reload' }, v);
    const e = parseExposition(registry.text());
    assert.equal(e.types.get('d_seconds'), 'histogram');
    const bucket = (method: string, le: string): number | undefined => sampleValue(e, 'd_seconds_bucket', { method, le });
    assert.deepEqual(
      ['0.1', '0.5', '1', '+Inf'].map((le) => bucket('reload', le)),
      [1, 3, 4, 5],
    );
    assert.equal(sampleValue(e, 'd_seconds_count', { method: 'reload' }), 5);
    assert.ok(Math.abs((sampleValue(e, 'd_seconds_sum', { method: 'reload' }) ?? 0) - 4.15) < 1e-9);
    assert.equal(bucket('idle', '+Inf'), 0);
    assert.equal(sampleValue(e, 'd_seconds_count', { method: 'idle' }), 0);
  });

  test('property: any label values and help text stay readable and come back as they were', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string({ unit: 'binary' }), fc.double({ noNaN: true })), { minLength: 1, maxLength: 5 }), fc.string({ unit: 'binary' }), (series, help) => {
        const registry = new Registry();
        const g = registry.gauge({ name: 'g', help, labelNames: ['v'] });
        const want = new Map<string, number>();
        for (const [v, value] of series) {
          g.set({ v }, value);
          want.set(v, value);
        }
        const text = registry.text();
        const e = parseExposition(text);
        assert.equal(text.split('\n').filter((l) => l.startsWith('# HELP g ')).length, 1);
        const got = new Map(e.samples.filter((s) => s.name === 'g').map((s) => [unescapeLabel(s.labels.v ?? ''), s.value]));
        assert.equal(got.size, want.size);
        for (const [v, value] of want) assert.ok(Object.is(got.get(v), value === 0 ? 0 : value) || got.get(v) === value, `${JSON.stringify(v)}: ${got.get(v)} != ${value}`);
      }),
      { numRuns: 300 },
    );
  });
});
