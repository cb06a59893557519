/** Intention evaluation (Consul's precedence and matching) and the per-source decision cache. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { IntentionDecisions } from '../../src/intentions/decision-cache.js';
import { evaluate, intentionPrecedence, sourceMatches } from '../../src/intentions/evaluate.js';
import type { Intention, SourceIdentity } from '../../src/domain/intentions.js';

const THROUGHPUT_DECISIONS = 1_000_000;

function ixn(sourceName: string, action: Intention['action'], extra: Partial<Intention> = {}): Intention {
  const base: Intention = {
    sourceName,
    sourceNamespace: 'default',
    sourcePartition: '',
    sourcePeer: '',
    destinationName: 'api',
    destinationNamespace: 'default',
    destinationPartition: '',
    action,
    permissions: [],
    precedence: 0,
    ...extra,
  };
  return { ...base, precedence: extra.precedence ?? intentionPrecedence(base) };
}

const web: SourceIdentity = { service: 'web', namespace: 'default', partition: 'default' };
const other: SourceIdentity = { service: 'other', namespace: 'default', partition: 'default' };
const l7 = (source: string): Intention => ixn(source, '', { permissions: [{ action: 'allow', http: { path: { kind: 'prefix', value: '/x' }, headers: [], methods: [] } }] });

describe('intentionPrecedence (Consul UpdatePrecedence)', () => {
  const table: Array<[string, string, string, string, number]> = [
    ['default', 'web', 'default', 'api', 9],
    ['default', '*', 'default', 'api', 8],
    ['*', '*', 'default', 'api', 7],
    ['default', 'web', 'default', '*', 6],
    ['default', '*', 'default', '*', 5],
    ['*', '*', 'default', '*', 4],
    ['default', 'web', '*', '*', 3],
    ['default', '*', '*', '*', 2],
    ['*', '*', '*', '*', 1],
  ];
  for (const [sns, sn, dns, dn, p] of table) {
    test(`${sns}/${sn} => ${dns}/${dn} is ${p}`, () => {
      assert.equal(intentionPrecedence({ sourceNamespace: sns, sourceName: sn, destinationNamespace: dns, destinationName: dn }), p);
    });
  }
});

describe('evaluate', () => {
  test('an exact allow beats a wildcard deny, whatever the order', () => {
    const list = [ixn('*', 'deny'), ixn('web', 'allow')];
    assert.equal(evaluate(web, list, false).allowed, true);
    assert.equal(evaluate(web, [...list].reverse(), false).allowed, true);
    assert.equal(evaluate(other, list, true).allowed, false);
    assert.match(evaluate(other, list, true).reason, /default\/\* => default\/api \(deny, precedence 8\)/);
  });

  test('an exact deny beats a wildcard allow', () => {
    assert.equal(evaluate(web, [ixn('*', 'allow'), ixn('web', 'deny')], false).allowed, false);
  });

  test('no match: the default policy decides', () => {
    assert.deepEqual(evaluate(web, [ixn('db', 'allow')], true), { allowed: true, reason: 'no intention matches; the default policy is allow' });
    assert.equal(evaluate(web, [], false).allowed, false);
  });

  test('an L7 intention denies at L4, even with default allow, and is not skipped for a lower wildcard allow', () => {
    const d = evaluate(web, [l7('web'), ixn('*', 'allow')], true);
    assert.equal(d.allowed, false);
    assert.match(d.reason, /L7/);
    assert.equal(d.intention?.sourceName, 'web');
  });

  test('namespaces, partitions and peers must match', () => {
    const ns = ixn('web', 'allow', { sourceNamespace: 'team' });
    assert.equal(sourceMatches(ns, web), false);
    assert.equal(sourceMatches(ns, { ...web, namespace: 'team' }), true);
    assert.equal(sourceMatches(ixn('*', 'allow', { sourceNamespace: '*' }), { ...web, namespace: 'x' }), true);
    assert.equal(sourceMatches(ixn('web', 'allow', { sourcePartition: 'p1' }), web), false);
    assert.equal(sourceMatches(ixn('web', 'allow', { sourcePartition: 'p1' }), { ...web, partition: 'p1' }), true);
    // '' and 'default' are the same partition / namespace.
    assert.equal(sourceMatches(ixn('web', 'allow', { sourceNamespace: '' }), { ...web, partition: '' }), true);
    const peered = ixn('web', 'allow', { sourcePeer: 'east' });
    assert.equal(sourceMatches(peered, web), false);
    assert.equal(sourceMatches(peered, { ...web, peer: 'east' }), true);
    assert.equal(sourceMatches(ixn('web', 'allow'), { ...web, peer: 'east' }), false);
  });

  test('same as "first match in the match endpoint order" (reference model, random sets)', () => {
    const names = ['web', 'api', 'db', '*'];
    const intention = fc
      .record({ name: fc.constantFrom(...names), ns: fc.constantFrom('default', '*'), action: fc.constantFrom('allow', 'deny', 'l7') }, { noNullPrototype: true })
      .filter((r) => !(r.ns === '*' && r.name !== '*'))
      .map((r) => (r.action === 'l7' ? l7(r.name) : ixn(r.name, r.action as 'allow' | 'deny', { sourceNamespace: r.ns })));
    fc.assert(
      fc.property(fc.uniqueArray(intention, { selector: (i) => `${i.sourceNamespace}/${i.sourceName}`, maxLength: 6 }), fc.constantFrom('web', 'db', 'x'), fc.boolean(), (list, svc, def) => {
        const source = { service: svc, namespace: 'default', partition: 'default' };
        const sorted = [...list].sort((a, b) => b.precedence - a.precedence);
        const first = sorted.find((i) => sourceMatches(i, source));
        const expected = first === undefined ? def : first.permissions.length === 0 && first.action === 'allow';
        assert.equal(evaluate(source, list, def).allowed, expected);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('IntentionDecisions (cache)', () => {
  test('denies until loaded; caches per source; clears when intentions change', () => {
    const d = new IntentionDecisions();
    assert.equal(d.decide(web).allowed, false);
    assert.match(d.decide(web).reason, /not loaded/);
    assert.equal(d.update({ intentions: [ixn('web', 'allow')], defaultAllow: false }), true);
    assert.equal(d.decide(web).allowed, true);
    assert.equal(d.decide(web).allowed, true);
    assert.equal(d.decide(other).allowed, false);
    assert.deepEqual(d.stats, { size: 2, hits: 1, misses: 2 });
    // Same set again: no change, cache kept.
    assert.equal(d.update({ intentions: [ixn('web', 'allow')], defaultAllow: false }), false);
    assert.equal(d.stats.size, 2);
    // New set: cache cleared, new verdicts.
    assert.equal(d.update({ intentions: [ixn('web', 'deny')], defaultAllow: true }), true);
    assert.equal(d.stats.size, 0);
    assert.equal(d.decide(web).allowed, false);
    assert.equal(d.decide(other).allowed, true);
  });

  test('the default policy alone changing clears the cache', () => {
    const d = new IntentionDecisions();
    d.update({ intentions: [], defaultAllow: true });
    assert.equal(d.decide(web).allowed, true);
    assert.equal(d.update({ intentions: [], defaultAllow: false }), true);
    assert.equal(d.decide(web).allowed, false);
  });

  test('bounded LRU: the least recently used entry goes first', () => {
    const d = new IntentionDecisions({ maxEntries: 3 });
    d.update({ intentions: [], defaultAllow: true });
    const s = (name: string): SourceIdentity => ({ service: name, namespace: 'default', partition: 'default' });
    d.decide(s('a'));
    d.decide(s('b'));
    d.decide(s('c'));
    d.decide(s('a')); // a is now the most recent
    d.decide(s('d')); // evicts b
    assert.equal(d.stats.size, 3);
    const before = d.stats.misses;
    d.decide(s('a'));
    d.decide(s('c'));
    d.decide(s('d'));
    assert.equal(d.stats.misses, before);
    d.decide(s('b'));
    assert.equal(d.stats.misses, before + 1);
  });

  test('identities cannot collide through separators in names', () => {
    const d = new IntentionDecisions();
    d.update({ intentions: [ixn('a|b', 'allow', { sourceNamespace: 'x' })], defaultAllow: false });
    assert.equal(d.decide({ service: 'a|b', namespace: 'x', partition: 'default' }).allowed, true);
    assert.equal(d.decide({ service: 'b', namespace: 'x|a', partition: 'default' }).allowed, false);
  });

  test('throughput with the cache (reported)', (t) => {
    const intentions = Array.from({ length: 200 }, (_, i) => ixn(`svc-${i}`, i % 2 === 0 ? 'allow' : 'deny'));
    intentions.push(ixn('*', 'deny'));
    const d = new IntentionDecisions();
    d.update({ intentions, defaultAllow: false });
    const sources = Array.from({ length: 1000 }, (_, i) => ({ service: `svc-${i}`, namespace: 'default', partition: 'default' }));
    let allowed = 0;
    const started = process.hrtime.bigint();
    for (let i = 0; i < THROUGHPUT_DECISIONS; i++) if (d.decide(sources[i % sources.length] as SourceIdentity).allowed) allowed++;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const uncachedStart = process.hrtime.bigint();
    const uncachedRuns = 100_000;
    for (let i = 0; i < uncachedRuns; i++) evaluate(sources[i % sources.length] as SourceIdentity, intentions, false);
    const uncachedSeconds = Number(process.hrtime.bigint() - uncachedStart) / 1e9;
    t.diagnostic(
      `cached: ${Math.round(THROUGHPUT_DECISIONS / seconds).toLocaleString('en')} decisions/s; ` +
        `uncached evaluate over ${intentions.length} intentions: ${Math.round(uncachedRuns / uncachedSeconds).toLocaleString('en')} decisions/s`,
    );
    assert.equal(allowed, THROUGHPUT_DECISIONS / 10); // svc-0..svc-199 even are allowed: 100 of 1000 sources
    assert.ok(THROUGHPUT_DECISIONS / seconds > 100_000, `only ${THROUGHPUT_DECISIONS / seconds} decisions/s`);
  });
});
