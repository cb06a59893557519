/**
 * The Envoy-compatible series on /metrics, through the real stats server with a fake HAProxy
 * metrics socket: appended after HAProxy's families as one valid exposition, computed from the
 * HAProxy text of the same scrape, and a failure computing them costs those series only.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HaproxyStatsClient } from '../../src/telemetry/haproxy-stats.js';
import { EnvoyLatency, envoyExposition } from '../../src/telemetry/envoy-compat.js';
import { envoyView } from '../../src/telemetry/envoy-tags.js';
import { SidecarMetrics } from '../../src/telemetry/metrics.js';
import { StatsServer } from '../../src/telemetry/stats-server.js';
import { snapshot } from '../helpers/fixtures.js';
import { captureLogs, type CapturedLogs } from '../helpers/log-capture.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';

const HAPROXY_METRICS = [
  '# HELP haproxy_frontend_http_responses_total Total number of HTTP responses.',
  '# TYPE haproxy_frontend_http_responses_total counter',
  'haproxy_frontend_http_responses_total{proxy="public_listener",code="2xx"} 41',
  'haproxy_frontend_http_responses_total{proxy="public_listener",code="5xx"} 1',
  '',
].join('\n');

let dir: string;
let haproxy: Server;
let logs: CapturedLogs;
let server: StatsServer;
let statsClient: HaproxyStatsClient;
let failing = false;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hc-envoy-'));
  haproxy = createServer((req, res) => {
    if (req.url === '/metrics') res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(HAPROXY_METRICS);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => haproxy.listen({ path: join(dir, 'stats.sock') }, resolve));
  logs = captureLogs();
  const metrics = new SidecarMetrics(
    { version: 't', haproxyVersion: '2.6.12', nodeVersion: process.versions.node },
    { ready: () => true, haproxyState: () => 'running', leafValidBefore: () => '2125-01-01T00:00:00Z', caRoots: () => 1, runningWatches: () => [], spoe: () => undefined },
  );
  statsClient = new HaproxyStatsClient({ socketPath: join(dir, 'stats.sock'), scrapeTimeoutMs: 1_000, probeTimeoutMs: 500 });
  const view = envoyView(snapshot({ listener: { protocol: 'http' } }));
  const latency = new EnvoyLatency();
  server = await StatsServer.listen({
    listen: { host: '127.0.0.1', port: 0 },
    metrics,
    haproxy: statsClient,
    view: () => ({ shuttingDown: false, firstApplied: true, missing: [], haproxyState: 'running', leafValidBefore: '2125-01-01T00:00:00Z', caRoots: 1 }),
    envoy: (text) => {
      if (failing) throw new Error('broken on purpose');
      return envoyExposition(text, view, latency);
    },
    logger: logs.logger,
  });
});

after(async () => {
  await server?.close();
  await statsClient?.close();
  await new Promise((resolve) => haproxy?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

async function metrics(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

describe('the Envoy-compatible series on /metrics', () => {
  test("come after HAProxy's families, from the same scrape, in one valid exposition", async () => {
    const body = await metrics();
    const exposition = parseExposition(body);
    const labels = { consul_source_service: 'web', envoy_http_conn_manager_prefix: 'public_listener' };
    assert.equal(sampleValue(exposition, 'envoy_http_downstream_rq_xx', { ...labels, envoy_response_code_class: '5' }), 1);
    assert.equal(sampleValue(exposition, 'envoy_http_downstream_rq_completed', labels), 42);
    assert.equal(sampleValue(exposition, 'haproxy_frontend_http_responses_total', { proxy: 'public_listener', code: '2xx' }), 41);
    assert.ok(body.indexOf('haproxy_frontend_http_responses_total') < body.indexOf('envoy_http_downstream_rq_xx'));
  });

  test('a failure computing them costs those series only, and is logged', async () => {
    failing = true;
    const exposition = parseExposition(await metrics());
    failing = false;
    assert.equal(exposition.samples.filter((s) => s.name.startsWith('envoy_')).length, 0);
    assert.equal(sampleValue(exposition, 'haproxy_connect_haproxy_scrape_success'), 1);
    assert.ok(logs.find((l) => l.msg === 'computing the Envoy-compatible metrics failed' && l.err === 'broken on purpose'));
  });
});
