/**
 * haproxy-connect's own metrics: a valid exposition (one HELP/TYPE per family, every name
 * prefixed), counters that move with the events pushed in, states read at scrape time, bounded
 * labels, one registry per instance, and the authorizer's decision hook.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import type { ProcessState } from '../../src/driver/process.js';
import type { OpResult } from '../../src/driver/runtime-apply.js';
import { Authorizer } from '../../src/intentions/authorizer.js';
import type { SpoeMessage } from '../../src/spoe/types.js';
import { METRIC_PREFIX, SidecarMetrics, watchKind, type MetricsSources } from '../../src/telemetry/metrics.js';
import { PEM, TRUST_DOMAIN } from '../helpers/fixtures.js';
import { parseExposition, sampleSum, sampleValue, type Exposition } from '../helpers/prometheus.js';

const NOW = Date.parse('2030-01-01T00:00:00Z');
const BUILD = { version: '1.2.3', haproxyVersion: '2.6.12', nodeVersion: '20.20.2' };

interface Fixture {
  metrics: SidecarMetrics;
  sources: MetricsSources & { state: ProcessState; watches: string[]; validBefore: string; isReady: boolean };
  scrape(): Promise<Exposition>;
}

function fixture(): Fixture {
  const sources = {
    state: 'running' as ProcessState,
    watches: ['registration:web-sidecar-proxy', 'roots', 'leaf:web'],
    validBefore: new Date(NOW + 3_600_000).toISOString(),
    isReady: true,
    ready(): boolean {
      return this.isReady;
    },
    haproxyState(): ProcessState {
      return this.state;
    },
    leafValidBefore(): string {
      return this.validBefore;
    },
    caRoots: () => 2,
    runningWatches(): readonly string[] {
      return this.watches;
    },
    spoe: () => ({ connections: 3, protocolErrors: 1, handlerErrors: 0 }),
  };
  const metrics = new SidecarMetrics(BUILD, sources, () => NOW);
  return { metrics, sources, scrape: async () => parseExposition(await metrics.exposition()) };
}

const op = (kind: 'add-server' | 'remove-server', status: OpResult['status']): OpResult => ({
  op: kind === 'add-server' ? { kind, backend: 'b', server: { name: 's', address: '10.0.0.1', port: 1, weight: 1 }, spec: 's 10.0.0.1:1' } : { kind, backend: 'b', server: 's' },
  status,
  error: undefined,
});

describe('SidecarMetrics', () => {
  test('the exposition is valid: one HELP and TYPE per family, every name prefixed, no NaN', async () => {
    const { metrics, scrape } = fixture();
    const text = await metrics.exposition();
    const exposition = await scrape();
    assert.ok(exposition.types.size >= 20, `only ${exposition.types.size} families`);
    for (const name of exposition.types.keys()) assert.ok(name.startsWith(METRIC_PREFIX), name);
    for (const sample of exposition.samples) {
      assert.ok(sample.name.startsWith(METRIC_PREFIX), sample.name);
      assert.ok(!Number.isNaN(sample.value), `${sample.name} is NaN`);
    }
    assert.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
    assert.ok(text.endsWith('\n'));
    assert.equal(sampleValue(exposition, 'haproxy_connect_build_info', { version: '1.2.3', haproxy_version: '2.6.12', nodejs_version: '20.20.2' }), 1);
  });

  test('states are read at scrape time: readiness, HAProxy state, leaf expiry, roots, SPOE', async () => {
    const f = fixture();
    let e = await f.scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_ready'), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_state', { state: 'running' }), 1);
    assert.equal(sampleSum(e, 'haproxy_connect_haproxy_state'), 1, 'exactly one state is current');
    assert.equal(e.samples.filter((s) => s.name === 'haproxy_connect_haproxy_state').length, 6, 'one series per supervisor state');
    assert.equal(sampleValue(e, 'haproxy_connect_leaf_certificate_expiry_seconds'), 3600);
    assert.equal(sampleValue(e, 'haproxy_connect_ca_roots'), 2);
    assert.equal(sampleValue(e, 'haproxy_connect_spoe_connections'), 3);
    assert.equal(sampleValue(e, 'haproxy_connect_spoe_errors_total', { kind: 'protocol' }), 1);

    f.sources.isReady = false;
    f.sources.state = 'crashed';
    f.sources.validBefore = new Date(NOW - 10_000).toISOString();
    e = await f.scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_ready'), 0);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_state', { state: 'crashed' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_state', { state: 'running' }), 0);
    assert.equal(sampleValue(e, 'haproxy_connect_leaf_certificate_expiry_seconds'), -10);
  });

  test('watch health by kind: pending until answered, failing after an error, ok again after an answer; stopped watches drop out', async () => {
    const f = fixture();
    f.sources.watches.push('target:api.default.default.dc1', 'target:db.default.default.dc1');
    const state = async (watch: string, s: string): Promise<number | undefined> => sampleValue(await f.scrape(), 'haproxy_connect_consul_watches', { watch, state: s });
    assert.equal(await state('upstream', 'pending'), 2);
    f.metrics.watchAnswered('target:api.default.default.dc1');
    f.metrics.watchFailed('target:db.default.default.dc1', 1);
    f.metrics.watchFailed('target:db.default.default.dc1', 2);
    assert.equal(await state('upstream', 'ok'), 1);
    assert.equal(await state('upstream', 'failing'), 1);
    assert.equal(await state('upstream', 'pending'), 0);
    assert.equal(sampleValue(await f.scrape(), 'haproxy_connect_consul_watch_errors_total', { watch: 'upstream' }), 2);

    f.metrics.watchAnswered('target:db.default.default.dc1');
    assert.equal(await state('upstream', 'ok'), 2);
    // The db upstream is removed from the registration: its watch stops and leaves the gauge.
    f.sources.watches = f.sources.watches.filter((w) => !w.startsWith('target:db.'));
    assert.equal(await state('upstream', 'ok'), 1);
    assert.equal(await state('upstream', 'failing'), 0);

    f.metrics.snapshotChanged('target-endpoints');
    f.metrics.snapshotChanged('leaf');
    f.metrics.snapshotChanged('target-removed');
    const e = await f.scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_consul_watch_updates_total', { watch: 'upstream' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_consul_watch_updates_total', { watch: 'leaf' }), 1);
  });

  test('watch names map to a fixed set of kinds', () => {
    assert.equal(watchKind('registration:web-sidecar-proxy'), 'registration');
    assert.equal(watchKind('leaf:web'), 'leaf');
    assert.equal(watchKind('roots'), 'roots');
    assert.equal(watchKind('intentions:ns1/web'), 'intentions');
    assert.equal(watchKind('target:api.default.default.dc1'), 'upstream');
    assert.equal(watchKind('target:query:q.dc1'), 'upstream');
    assert.equal(watchKind('something-new:x'), 'other');
  });

  test('applies, reloads by reason category, runtime operations by kind and result', async () => {
    const { metrics, scrape } = fixture();
    metrics.activated({ outcome: 'started', reasons: ['initial configuration'], durationMs: 120 });
    metrics.activated({ outcome: 'reloaded', reasons: ['frontend upstream_api_1234abcd added', 'backend upstream_api_1234abcd_be added'], durationMs: 80 });
    metrics.activated({ outcome: 'reloaded', reasons: ['CA roots changed (1 added, 0 removed)', 'drift: server b/s is missing'], durationMs: 90 });
    metrics.activated({ outcome: 'failed', reasons: ['global settings changed'], durationMs: 30 });
    metrics.activated({ outcome: 'deferred', reasons: ['haproxy is crashed'], durationMs: 10 });
    metrics.runtimeApplied({ results: [op('add-server', 'ok'), op('add-server', 'ok'), op('remove-server', 'pending-deletion')], durationMs: 1 });
    metrics.runtimeApplied({ results: [op('remove-server', 'failed')], durationMs: 2 });
    const e = await scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_config_applies_total', { method: 'reload', result: 'ok' }), 4);
    assert.equal(sampleValue(e, 'haproxy_connect_config_applies_total', { method: 'reload', result: 'failed' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_config_applies_total', { method: 'runtime', result: 'ok' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_config_applies_total', { method: 'runtime', result: 'failed' }), 1);
    // Only starts and reloads count; two reasons of one category count once.
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'initial' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'upstream' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'roots' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'drift' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'settings' }), 0);
    assert.equal(sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'restart' }), 0);
    assert.equal(sampleValue(e, 'haproxy_connect_runtime_operations_total', { op: 'add-server', result: 'ok' }), 2);
    assert.equal(sampleValue(e, 'haproxy_connect_runtime_operations_total', { op: 'remove-server', result: 'pending' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_runtime_operations_total', { op: 'remove-server', result: 'failed' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_config_apply_duration_seconds_count', { method: 'reload' }), 5);
    assert.equal(sampleValue(e, 'haproxy_connect_config_apply_duration_seconds_sum', { method: 'runtime' }), 0.003);
    metrics.haproxyExitedUnexpectedly();
    assert.equal(sampleValue(await scrape(), 'haproxy_connect_haproxy_unexpected_exits_total'), 1);
  });

  test('items left out of the configuration: a gauge of the current ones and a counter of new ones, by kind', async () => {
    const { metrics, scrape } = fixture();
    const e0 = await scrape();
    assert.equal(sampleValue(e0, 'haproxy_connect_dropped_items', { kind: 'endpoint' }), 0);
    assert.equal(sampleValue(e0, 'haproxy_connect_dropped_items_total', { kind: 'root' }), 0);
    const a = { kind: 'endpoint' as const, item: 'service:default/api@ n1/a', reason: 'bad address' };
    const b = { kind: 'endpoint' as const, item: 'service:default/api@ n2/b', reason: 'port 0' };
    const u = { kind: 'upstream' as const, item: 'Upstreams[1]', reason: 'protocol' };
    metrics.dropped({ current: [a, b, u], added: [a, b, u] });
    metrics.dropped({ current: [b], added: [] });
    const e = await scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_dropped_items', { kind: 'endpoint' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_dropped_items', { kind: 'upstream' }), 0);
    assert.equal(sampleValue(e, 'haproxy_connect_dropped_items_total', { kind: 'endpoint' }), 2);
    assert.equal(sampleValue(e, 'haproxy_connect_dropped_items_total', { kind: 'upstream' }), 1);
  });

  test('label values stay bounded: series counts do not grow with events', async () => {
    const { metrics, scrape } = fixture();
    const before = (await scrape()).samples.length;
    for (let i = 0; i < 200; i++) {
      metrics.activated({ outcome: 'reloaded', reasons: [`frontend upstream_svc${i}_${i.toString(16).padStart(8, '0')} added`, `something nobody planned ${i}`], durationMs: 1 });
      metrics.watchFailed(`target:svc${i}.default.default.dc1`, 1);
    }
    const after = (await scrape()).samples.length;
    assert.equal(after, before);
  });

  test('the HAProxy scrape gauges and separate registries per instance', async () => {
    const a = fixture();
    const b = fixture();
    a.metrics.haproxyScraped(true, 4);
    a.metrics.activated({ outcome: 'started', reasons: ['initial configuration'], durationMs: 1 });
    const ea = await a.scrape();
    const eb = await b.scrape();
    assert.equal(sampleValue(ea, 'haproxy_connect_haproxy_scrape_success'), 1);
    assert.equal(sampleValue(ea, 'haproxy_connect_haproxy_scrape_duration_seconds'), 0.004);
    assert.equal(sampleValue(eb, 'haproxy_connect_haproxy_scrape_success'), 0, 'no scrape yet');
    assert.equal(sampleValue(eb, 'haproxy_connect_haproxy_reloads_total', { reason: 'initial' }), 0);
  });

  test('the authorizer reports allow, deny and error decisions with their duration', async () => {
    const { metrics, scrape } = fixture();
    const authorizer = new Authorizer({ onDecision: metrics.intentionDecided });
    authorizer.update({
      trustDomain: TRUST_DOMAIN,
      intentions: {
        defaultAllow: false,
        intentions: [
          {
            sourceName: 'web',
            sourceNamespace: 'default',
            sourcePartition: 'default',
            sourcePeer: '',
            destinationName: 'api',
            destinationNamespace: 'default',
            destinationPartition: 'default',
            action: 'allow',
            permissions: [],
            precedence: 9,
          },
        ],
      },
    });
    const message = (pem: string | undefined): SpoeMessage[] => [
      {
        name: 'authorize',
        args: pem === undefined ? [] : [{ name: 'cert', value: { type: 'binary', value: Buffer.from(new X509Certificate(pem).raw) } }],
      },
    ];
    authorizer.handle(message(PEM.webCert));
    authorizer.handle(message(PEM.webCert));
    authorizer.handle(message(PEM.apiCert));
    authorizer.handle(message(undefined));
    const e = await scrape();
    assert.equal(sampleValue(e, 'haproxy_connect_intention_decisions_total', { result: 'allow' }), 2);
    assert.equal(sampleValue(e, 'haproxy_connect_intention_decisions_total', { result: 'deny' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_intention_decisions_total', { result: 'error' }), 1);
    assert.equal(sampleValue(e, 'haproxy_connect_intention_decision_duration_seconds_count'), 4);
    assert.equal(sampleValue(e, 'haproxy_connect_intention_decision_duration_seconds_bucket', { le: '+Inf' }), 4);
  });
});
