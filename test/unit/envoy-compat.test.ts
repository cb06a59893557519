/**
 * The Envoy-compatible series: Consul's tag rules (checked against Consul 1.16.2's own bootstrap
 * golden file), the labels per HAProxy proxy, the counters translated from HAProxy's exporter,
 * and the latency histograms from access records.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { Chain, Target } from '../../src/domain/snapshot.js';
import { fnv1a32Hex, upstreamBackendName, upstreamFrontendName } from '../../src/domain/haproxy-names.js';
import type { AccessRecord } from '../../src/telemetry/access-log-record.js';
import { ENVOY_BUCKETS_MS, EnvoyLatency, envoyExposition } from '../../src/telemetry/envoy-compat.js';
import { CONSUL_TAG_RULES, envoyView, resourceTags, upstreamStatPrefix } from '../../src/telemetry/envoy-tags.js';
import { TRUST_DOMAIN, snapshot, upstream } from '../helpers/fixtures.js';
import { parseExposition, type Sample } from '../helpers/prometheus.js';

const TD_ID = TRUST_DOMAIN.replace(/\.consul$/, '');
const SOURCE = { local_cluster: 'web', consul_source_service: 'web', consul_source_namespace: 'default', consul_source_partition: 'default', consul_source_datacenter: 'dc1' };

function consulGolden(): string {
  const modcache = execFileSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
  return readFileSync(`${modcache}/github.com/hashicorp/consul@v1.16.2/command/connect/envoy/testdata/defaults.golden`, 'utf8');
}

describe('Consul tag rules', () => {
  it("are Consul 1.16.2's own, rule for rule (its bootstrap golden file `defaults.golden`)", () => {
    const golden = JSON.parse(consulGolden()) as { stats_config: { stats_tags: Array<{ tag_name: string; regex?: string }> } };
    const fromConsul = golden.stats_config.stats_tags.filter((t) => t.regex !== undefined).map((t) => [t.tag_name, t.regex]);
    assert.deepEqual(
      CONSUL_TAG_RULES.map(([name, re]) => [name, re]),
      fromConsul,
    );
  });

  it('label a cluster stat as Envoy does for Consul (default partition, subset, other partition, prepared query)', () => {
    assert.deepEqual(resourceTags(`cluster.api.default.dc1.internal.${TRUST_DOMAIN}.upstream_rq_completed`), {
      consul_destination_service: 'api',
      consul_destination_namespace: 'default',
      consul_destination_datacenter: 'dc1',
      consul_destination_routing_type: 'internal',
      consul_destination_trust_domain: TD_ID,
      consul_destination_target: 'api.default.dc1',
      consul_destination_full_target: `api.default.dc1.internal.${TD_ID}`,
      consul_service: 'api',
      consul_namespace: 'default',
      consul_datacenter: 'dc1',
      consul_routing_type: 'internal',
      consul_trust_domain: TD_ID,
      consul_target: 'api.default.dc1',
      consul_full_target: `api.default.dc1.internal.${TD_ID}`,
      envoy_cluster_name: 'api',
    });
    const subset = resourceTags(`cluster.v2.api.default.dc1.internal.${TRUST_DOMAIN}.upstream_rq_completed`);
    assert.equal(subset.consul_destination_service_subset, 'v2');
    assert.equal(subset.consul_destination_service, 'api');
    // A non-default partition (Consul Enterprise): Consul's rules are ambiguous there, and with
    // leftmost-first matching (Envoy's and ours alike) the optional subset takes the service name.
    const partition = resourceTags(`cluster.api.ns1.part1.dc1.internal-v1.${TRUST_DOMAIN}.upstream_rq_completed`);
    assert.equal(partition.consul_destination_service_subset, 'api');
    assert.equal(partition.consul_destination_service, 'ns1');
    assert.equal(partition.consul_destination_datacenter, 'dc1');
    assert.equal(partition.consul_destination_partition, undefined);
    const query = resourceTags(`cluster.geo-db.default.dc1.query.${TRUST_DOMAIN}.upstream_rq_completed`);
    assert.equal(query.consul_destination_service, 'geo-db');
    assert.equal(query.consul_destination_routing_type, 'query');
    assert.equal(query.consul_destination_datacenter, undefined);
    assert.deepEqual(resourceTags('cluster.local_app.upstream_rq_completed'), { envoy_cluster_name: 'local_app' });
  });

  it('label upstream listener stats as Envoy does for Consul (HTTP and TCP)', () => {
    assert.deepEqual(resourceTags('http.upstream.api.default.default.dc1.downstream_rq_completed'), {
      consul_upstream_service: 'api',
      consul_upstream_datacenter: 'dc1',
      consul_upstream_namespace: 'default',
      consul_upstream_partition: 'default',
      envoy_http_conn_manager_prefix: 'upstream',
    });
    assert.equal(resourceTags('tcp.upstream.api.default.default.dc1.downstream_cx_total').envoy_tcp_prefix, 'upstream.api.default.default.dc1');
    assert.deepEqual(resourceTags('http.public_listener.downstream_rq_completed'), { envoy_http_conn_manager_prefix: 'public_listener' });
    assert.deepEqual(resourceTags('tcp.public_listener.downstream_cx_total'), { envoy_tcp_prefix: 'public_listener' });
  });

  it("give an upstream listener Consul's stat prefix (filterName <svc>.<ns>.<partition>.<dc>; prepared queries by EnvoyID)", () => {
    const snap = snapshot();
    assert.equal(upstreamStatPrefix(upstream('api'), snap), 'upstream.api.default.default.dc1');
    assert.equal(upstreamStatPrefix(upstream('api', { datacenter: 'dc2' }), snap), 'upstream.api.default.default.dc2');
    assert.equal(upstreamStatPrefix(upstream('geo', { destinationType: 'prepared_query' }), snap), 'upstream.prepared_query_geo');
  });
});

const HAPROXY_TEXT = (api: string, apiBe: string): string =>
  [
    '# HELP haproxy_frontend_http_responses_total Total number of HTTP responses',
    '# TYPE haproxy_frontend_http_responses_total counter',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="1xx"} 0',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="2xx"} 40',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="3xx"} 0',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="4xx"} 1',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="5xx"} 3',
    'haproxy_frontend_http_responses_total{proxy="public_listener",code="other"} 0',
    `haproxy_frontend_http_responses_total{proxy="${api}",code="2xx"} 10`,
    `haproxy_frontend_http_responses_total{proxy="${api}",code="5xx"} 2`,
    'haproxy_frontend_http_responses_total{proxy="stats",code="2xx"} 99',
    'haproxy_frontend_connections_total{proxy="public_listener"} 7',
    'haproxy_frontend_bytes_in_total{proxy="public_listener"} 1000',
    'haproxy_frontend_bytes_out_total{proxy="public_listener"} 2000',
    `haproxy_backend_http_responses_total{proxy="${apiBe}",code="2xx"} 10`,
    `haproxy_backend_http_responses_total{proxy="${apiBe}",code="5xx"} 2`,
    `haproxy_backend_connection_attempts_total{proxy="${apiBe}"} 3`,
    `haproxy_backend_connection_errors_total{proxy="${apiBe}"} 1`,
    `haproxy_backend_bytes_in_total{proxy="${apiBe}"} 500`,
    `haproxy_backend_bytes_out_total{proxy="${apiBe}"} 700`,
    'haproxy_backend_connection_attempts_total{proxy="spoe_intentions_agent"} 5',
    'haproxy_server_bytes_in_total{proxy="local_app",server="app"} 82',
  ].join('\n');

function find(samples: Sample[], name: string, labels: Record<string, string>): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

describe('Envoy-compatible series', () => {
  const api = upstream('api', { protocol: 'http' });
  const snap = snapshot({ listener: { protocol: 'http' }, upstreams: [api] });
  const view = envoyView(snap);

  it("translate HAProxy's counters with the labels Consul's Envoy would have", () => {
    const text = envoyExposition(HAPROXY_TEXT(upstreamFrontendName(api.key), upstreamBackendName(api.key)), view, new EnvoyLatency());
    const { samples, types } = parseExposition(text);
    assert.equal(types.get('envoy_http_downstream_rq_xx'), 'counter');
    const inbound = { ...SOURCE, envoy_http_conn_manager_prefix: 'public_listener' };
    assert.equal(find(samples, 'envoy_http_downstream_rq_xx', { ...inbound, envoy_response_code_class: '2' })[0]?.value, 40);
    assert.equal(find(samples, 'envoy_http_downstream_rq_xx', { ...inbound, envoy_response_code_class: '5' })[0]?.value, 3);
    assert.equal(find(samples, 'envoy_http_downstream_rq_completed', inbound)[0]?.value, 44);
    assert.equal(find(samples, 'envoy_listener_http_downstream_rq_xx', { ...inbound, envoy_listener_address: '0.0.0.0_21000', envoy_response_code_class: '5' })[0]?.value, 3);
    assert.equal(find(samples, 'envoy_http_downstream_cx_rx_bytes_total', inbound)[0]?.value, 1000);
    const upstreamListener = { ...SOURCE, envoy_http_conn_manager_prefix: 'upstream', consul_upstream_service: 'api', consul_upstream_datacenter: 'dc1', consul_upstream_namespace: 'default' };
    assert.equal(find(samples, 'envoy_http_downstream_rq_completed', upstreamListener)[0]?.value, 12);
    const cluster = { ...SOURCE, consul_destination_service: 'api', consul_destination_datacenter: 'dc1', consul_destination_namespace: 'default', envoy_cluster_name: 'api' };
    assert.equal(find(samples, 'envoy_cluster_upstream_rq_xx', { ...cluster, envoy_response_code_class: '5' })[0]?.value, 2);
    assert.equal(find(samples, 'envoy_cluster_upstream_rq_completed', cluster)[0]?.value, 12);
    assert.equal(find(samples, 'envoy_cluster_upstream_cx_connect_fail', cluster)[0]?.value, 1);
    assert.equal(find(samples, 'envoy_cluster_upstream_cx_rx_bytes_total', cluster)[0]?.value, 700);
    assert.equal(find(samples, 'envoy_cluster_upstream_cx_tx_bytes_total', cluster)[0]?.value, 500);
    // No series for proxies that are no Envoy listener or cluster.
    assert.deepEqual(
      samples.filter((s) => s.labels.envoy_cluster_name === 'spoe_intentions_agent' || s.labels.envoy_http_conn_manager_prefix === 'stats'),
      [],
    );
    // Every series carries the source labels, and only values from the registration.
    for (const s of samples) assert.equal(s.labels.consul_source_service, 'web');
  });

  it('give a TCP public listener envoy_tcp_* series, and nothing without a snapshot', () => {
    const tcp = envoyView(snapshot());
    const { samples } = parseExposition(envoyExposition(HAPROXY_TEXT('x', 'y'), tcp, new EnvoyLatency()));
    assert.equal(find(samples, 'envoy_tcp_downstream_cx_total', { ...SOURCE, envoy_tcp_prefix: 'public_listener' })[0]?.value, 7);
    assert.equal(find(samples, 'envoy_tcp_downstream_cx_tx_bytes_total', { envoy_tcp_prefix: 'public_listener' })[0]?.value, 2000);
    assert.equal(find(samples, 'envoy_http_downstream_rq_xx', {}).length, 0);
    assert.equal(envoyExposition(HAPROXY_TEXT('x', 'y'), undefined, new EnvoyLatency()), '');
  });

  it("label the backends of a chain's other targets with their own cluster, and unknown variants with the destination", () => {
    const v2: Target = { id: 'v2.api.default.default.dc1', kind: 'service', service: 'api', namespace: 'default', partition: 'default', datacenter: 'dc1' };
    const other: Target = { id: 'db.default.default.dc2', kind: 'service', service: 'db', namespace: 'default', partition: 'default', datacenter: 'dc2' };
    const chain: Chain = { targets: [v2, other] };
    const chained = envoyView({ ...snap, chains: new Map([[api.key, chain]]) });
    const base = upstreamBackendName(api.key);
    assert.equal(chained.clusters.get(base)?.name, `v2.api.default.dc1.internal.${TRUST_DOMAIN}`);
    assert.equal(chained.clusters.get(`${base}_${fnv1a32Hex(other.id)}`)?.name, `db.default.dc2.internal.${TRUST_DOMAIN}`);
    assert.equal(chained.upstreamFallbacks.get(base)?.name, `api.default.dc1.internal.${TRUST_DOMAIN}`);
  });

  it('observe request latencies from access records into Envoy-named histograms (milliseconds, Envoy buckets)', () => {
    const latency = new EnvoyLatency();
    latency.setView(view);
    const record = (frontend: string, backend: string, durationMs: number, requestMs: number): AccessRecord =>
      ({ kind: 'request', frontend, backend, server: 's1', durationMs, requestMs }) as unknown as AccessRecord;
    latency.observe(record('public_listener', 'local_app', 3, 1));
    latency.observe(record('public_listener', 'local_app', 40, 0));
    latency.observe(record(upstreamFrontendName(api.key), upstreamBackendName(api.key), 7, 2));
    latency.observe({ ...record('public_listener', 'local_app', 1, 0), kind: 'connection' });
    const { samples, types } = parseExposition(envoyExposition('', view, latency));
    assert.equal(types.get('envoy_http_downstream_rq_time'), 'histogram');
    const inbound = { ...SOURCE, envoy_http_conn_manager_prefix: 'public_listener' };
    assert.equal(find(samples, 'envoy_http_downstream_rq_time_count', inbound)[0]?.value, 2);
    assert.equal(find(samples, 'envoy_http_downstream_rq_time_sum', inbound)[0]?.value, 43);
    assert.equal(find(samples, 'envoy_http_downstream_rq_time_bucket', { ...inbound, le: '5' })[0]?.value, 1);
    assert.equal(find(samples, 'envoy_http_downstream_rq_time_bucket', { ...inbound, le: '50' })[0]?.value, 2);
    assert.equal(find(samples, 'envoy_http_downstream_rq_time_bucket', inbound).length, ENVOY_BUCKETS_MS.length + 1);
    assert.equal(find(samples, 'envoy_cluster_upstream_rq_time_sum', { consul_destination_service: 'api' })[0]?.value, 5);
    assert.equal(find(samples, 'envoy_cluster_upstream_rq_time_count', { envoy_cluster_name: 'local_app' })[0]?.value, 2);
    // The upstream leaves the registration: its histograms go.
    latency.setView(envoyView(snapshot({ listener: { protocol: 'http' } })));
    const after = parseExposition(envoyExposition('', view, latency)).samples;
    assert.equal(find(after, 'envoy_cluster_upstream_rq_time_count', { consul_destination_service: 'api' }).length, 0);
    assert.equal(find(after, 'envoy_http_downstream_rq_time_count', inbound)[0]?.value, 2);
  });
});
