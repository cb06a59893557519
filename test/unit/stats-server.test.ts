/**
 * The -stats-addr server on loopback with fakes around it: a node:http server on a unix socket
 * plays HAProxy's metrics frontend. /metrics joins our exposition and HAProxy's (and serves ours
 * alone, with scrape_success 0, when HAProxy cannot be read), /ready and /health follow the view,
 * other paths are 404, and a taken address is a clear start error. Also the Consul client's
 * register/deregister requests.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import type { ProcessState } from '../../src/driver/process.js';
import { HaproxyStatsClient } from '../../src/telemetry/haproxy-stats.js';
import { SidecarMetrics } from '../../src/telemetry/metrics.js';
import type { SidecarView } from '../../src/telemetry/readiness.js';
import { StatsServer } from '../../src/telemetry/stats-server.js';
import { statsServiceDefinition } from '../../src/telemetry/stats-service.js';
import { captureLogs, type CapturedLogs } from '../helpers/log-capture.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';

const HAPROXY_METRICS = [
  '# HELP haproxy_frontend_http_requests_total Total number of HTTP requests received.',
  '# TYPE haproxy_frontend_http_requests_total counter',
  'haproxy_frontend_http_requests_total{proxy="public_listener"} 42',
  '# HELP haproxy_process_build_info HAProxy build info.',
  '# TYPE haproxy_process_build_info gauge',
  'haproxy_process_build_info{version="2.6.12"} 1',
  '',
].join('\n');

let dir: string;
let haproxy: Server;
let haproxyHealthy = true;
let logs: CapturedLogs;
let server: StatsServer;
let statsClient: HaproxyStatsClient;
const view: SidecarView = {
  shuttingDown: false,
  firstApplied: false,
  missing: [],
  haproxyState: 'stopped',
  leafValidBefore: new Date(Date.now() + 86_400_000).toISOString(),
  caRoots: 1,
};

function listen(s: Server, target: { path: string } | { port: number; host: string }): Promise<void> {
  return new Promise((resolve) => s.listen(target, resolve));
}

async function get(path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${server.port}${path}`, { method });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hc-stats-'));
  haproxy = createServer((req, res) => {
    if (req.url === '/metrics') res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(HAPROXY_METRICS);
    else if (req.url === '/health') res.writeHead(haproxyHealthy ? 200 : 503).end();
    else res.writeHead(404).end();
  });
  await listen(haproxy, { path: join(dir, 'stats.sock') });
  logs = captureLogs();
  const metrics = new SidecarMetrics(
    { version: 't', haproxyVersion: '2.6.12', nodeVersion: process.versions.node },
    {
      ready: () => false,
      haproxyState: () => view.haproxyState,
      leafValidBefore: () => view.leafValidBefore ?? '',
      caRoots: () => view.caRoots,
      runningWatches: () => [],
      spoe: () => undefined,
    },
  );
  statsClient = new HaproxyStatsClient({ socketPath: join(dir, 'stats.sock'), scrapeTimeoutMs: 1_000, probeTimeoutMs: 500 });
  server = await StatsServer.listen({ listen: { host: '127.0.0.1', port: 0 }, metrics, haproxy: statsClient, view: () => ({ ...view }), logger: logs.logger });
});

after(async () => {
  await server?.close();
  await statsClient?.close();
  await new Promise((resolve) => haproxy?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

describe('the stats server', () => {
  test('/ready is 503 with the reason until the first configuration is live, then 200', async () => {
    let res = await get('/ready');
    assert.equal(res.status, 503);
    assert.equal(res.body, 'no configuration applied yet\n');
    assert.match(res.type, /^text\/plain/);
    view.firstApplied = true;
    view.haproxyState = 'running';
    res = await get('/ready');
    assert.equal(res.status, 200);
    assert.equal(res.body, 'ready\n');
    view.shuttingDown = true;
    assert.equal((await get('/ready')).status, 503);
    view.shuttingDown = false;
  });

  test("/metrics: ours first, then HAProxy's, as one valid exposition", async () => {
    view.haproxyState = 'running';
    const res = await get('/metrics');
    assert.equal(res.status, 200);
    assert.match(res.type, /^text\/plain; version=0\.0\.4/);
    const exposition = parseExposition(res.body);
    assert.equal(sampleValue(exposition, 'haproxy_connect_haproxy_scrape_success'), 1);
    assert.equal(sampleValue(exposition, 'haproxy_frontend_http_requests_total', { proxy: 'public_listener' }), 42);
    assert.ok(res.body.indexOf('haproxy_connect_build_info') < res.body.indexOf('haproxy_frontend_http_requests_total'));
    assert.ok(exposition.types.has('haproxy_process_build_info') && exposition.types.has('haproxy_connect_build_info'));
    // HEAD answers the headers only.
    const head = await get('/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  test('/metrics without HAProxy: our metrics alone, with scrape_success 0, logged once', async () => {
    view.haproxyState = 'crashed';
    for (let i = 0; i < 3; i++) {
      const res = await get('/metrics');
      assert.equal(res.status, 200);
      const exposition = parseExposition(res.body);
      assert.equal(sampleValue(exposition, 'haproxy_connect_haproxy_scrape_success'), 0);
      assert.equal(
        exposition.samples.some((s) => s.name.startsWith('haproxy_frontend_')),
        false,
      );
    }
    assert.equal(logs.lines.filter((l) => l.msg === 'cannot read haproxy metrics; serving our own only').length, 1);
    assert.equal(logs.lines.filter((l) => l.msg === 'cannot read haproxy metrics; serving our own only')[0]?.err, 'haproxy is crashed');
    view.haproxyState = 'running';
    assert.equal(sampleValue(parseExposition((await get('/metrics')).body), 'haproxy_connect_haproxy_scrape_success'), 1);
    assert.ok(logs.find((l) => l.msg === 'haproxy metrics readable again'));
  });

  test('/metrics when the socket is gone: the socket error is logged, ours still served', async () => {
    const missing = new HaproxyStatsClient({ socketPath: join(dir, 'absent.sock') });
    try {
      await assert.rejects(missing.metrics(), /GET \/metrics on .*absent\.sock failed: ENOENT/);
      assert.match((await missing.probe()) ?? '', /ENOENT/);
    } finally {
      await missing.close();
    }
  });

  test('/health: 200 while HAProxy runs and answers, 503 with the reason otherwise', async () => {
    view.haproxyState = 'running';
    assert.deepEqual(await get('/health').then((r) => [r.status, r.body]), [200, 'alive\n']);
    haproxyHealthy = false;
    const sick = await get('/health');
    assert.equal(sick.status, 503);
    assert.match(sick.body, /does not answer on its stats socket: GET \/health on .* answered HTTP 503/);
    haproxyHealthy = true;
    view.haproxyState = 'crashed' satisfies ProcessState;
    assert.deepEqual(await get('/health').then((r) => [r.status, r.body]), [503, 'haproxy is crashed\n']);
    view.haproxyState = 'running';
  });

  test('other paths are 404, other methods 405', async () => {
    assert.equal((await get('/')).status, 404);
    assert.equal((await get('/metrics/x')).status, 404);
    assert.equal((await get('/ready?verbose=1')).status, 200);
    const post = await get('/metrics', 'POST');
    assert.equal(post.status, 405);
  });

  test('a taken address is STATS_LISTEN_FAILED naming it', async () => {
    await assert.rejects(
      StatsServer.listen({ listen: { host: '127.0.0.1', port: server.port }, metrics: {} as SidecarMetrics, haproxy: statsClient, view: () => view, logger: logs.logger }),
      (err: unknown) => {
        assert.ok(isHaproxyConnectError(err, 'STATS_LISTEN_FAILED'), String(err));
        assert.equal(err.message, `Cannot serve -stats-addr 127.0.0.1:${server.port}: the address is already in use`);
        return true;
      },
    );
    await assert.rejects(
      StatsServer.listen({ listen: { host: '192.0.2.1', port: server.port }, metrics: {} as SidecarMetrics, haproxy: statsClient, view: () => view, logger: logs.logger }),
      /Cannot serve -stats-addr 192\.0\.2\.1:\d+: the address is not one of this host/,
    );
  });
});

describe('ConsulHttpClient register/deregister', () => {
  const TOKEN = 'token-must-not-leak-5b1e';
  let agent: Server;
  const seen: Array<{ method: string; path: string; token: string | undefined; body: unknown }> = [];
  let status = 200;

  before(async () => {
    agent = createServer((req: IncomingMessage, res) => {
      let text = '';
      req.on('data', (d: Buffer) => {
        text += d.toString();
      });
      req.on('end', () => {
        seen.push({ method: req.method ?? '', path: req.url ?? '', token: req.headers['x-consul-token'] as string | undefined, body: text === '' ? undefined : JSON.parse(text) });
        res.writeHead(status).end(status === 200 ? '' : `denied for token ${TOKEN}`);
      });
    });
    await listen(agent, { port: 0, host: '127.0.0.1' });
  });
  after(async () => new Promise((resolve) => agent?.close(resolve)));

  const client = (): ConsulHttpClient => new ConsulHttpClient({ address: `127.0.0.1:${(agent.address() as AddressInfo).port}`, token: TOKEN });
  const definition = statsServiceDefinition({ proxyId: 'web-sidecar-proxy', serviceName: 'web', version: 't', listen: { host: '127.0.0.1', port: 9102 } });

  test("PUT /v1/agent/service/register with Consul's field names and the token header", async () => {
    const c = client();
    try {
      status = 200;
      await c.registerService(definition, new AbortController().signal);
      const request = seen.at(-1);
      assert.equal(request?.method, 'PUT');
      assert.equal(request?.path, '/v1/agent/service/register');
      assert.equal(request?.token, TOKEN);
      assert.deepEqual(request?.body, {
        ID: 'web-sidecar-proxy-stats',
        Name: 'web-connect-stats',
        Address: '127.0.0.1',
        Port: 9102,
        Tags: [],
        Meta: { proxy_id: 'web-sidecar-proxy', metrics_path: '/metrics', haproxy_connect_version: 't' },
        Check: { Name: 'web-connect-stats health', HTTP: 'http://127.0.0.1:9102/health', Method: 'GET', Interval: '10s', Timeout: '5s', DeregisterCriticalServiceAfter: '10m' },
      });
    } finally {
      await c.close();
    }
  });

  test('deregister: PUT with the escaped ID; 404 (already gone) is fine; 403 is CONSUL_FORBIDDEN without the token', async () => {
    const c = client();
    try {
      status = 200;
      await c.deregisterService('web/1 stats', new AbortController().signal);
      assert.equal(seen.at(-1)?.path, '/v1/agent/service/deregister/web%2F1%20stats');
      status = 404;
      await c.deregisterService('gone', new AbortController().signal);
      status = 403;
      await assert.rejects(c.registerService(definition, new AbortController().signal), (err: unknown) => {
        assert.ok(isHaproxyConnectError(err, 'CONSUL_FORBIDDEN'), String(err));
        assert.match(err.message, /rejected the ACL token for PUT \/v1\/agent\/service\/register/);
        assert.ok(!err.message.includes(TOKEN), err.message);
        return true;
      });
    } finally {
      await c.close();
    }
  });
});
