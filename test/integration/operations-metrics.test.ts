/**
 * -stats-addr and -stats-service-register end to end, with a real Consul dev agent and real
 * HAProxy: /ready answers 503 from the first moment until the first configuration is live, then
 * 200 (and HAProxy really serves then); /metrics joins HAProxy's own counters, which move with
 * traffic, and ours (intention denials, reloads by reason); the stats service shows up in Consul
 * with a passing check and is gone after exit; /ready turns 503 as soon as shutdown begins.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService, type MeshServiceSpec } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet, tlsHttpProbe } from '../../devtools/probes.js';
import { SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { parseExposition, sampleSum, sampleValue, type Exposition } from '../helpers/prometheus.js';

const PROBE_TIMEOUT_MS = 3_000;
const REQUESTS = 50;

let agent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let api: SidecarProcess | undefined;
let ports: Record<string, number>;
let apiSpec: MeshServiceSpec;

const statsUrl = (path: string): string => `http://127.0.0.1:${ports.apiStats as number}${path}`;

async function scrape(): Promise<Exposition> {
  const res = await fetch(statsUrl('/metrics'), { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

/** GET on the stats server: status and body, or undefined while nothing listens. */
async function statsGet(path: string): Promise<{ status: number; body: string } | undefined> {
  try {
    const res = await fetch(statsUrl(path), { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    return { status: res.status, body: (await res.text()).trim() };
  } catch {
    return undefined;
  }
}

function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

async function leafOf(service: string): Promise<{ CertPEM: string; PrivateKeyPEM: string }> {
  return agent.get(`/v1/agent/connect/ca/leaf/${service}`);
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-ops-'));
  const names = ['api', 'apiSidecar', 'apiStats', 'web', 'webSidecar', 'webToApi', 'batch', 'batchSidecar', 'apiToWeb'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  apps.push(await startHttpApp('api', ports.api as number));
  apps.push(await startHttpApp('web', ports.web as number));
  apiSpec = { id: 'api', name: 'api', port: ports.api as number, sidecarPort: ports.apiSidecar as number, protocol: 'http' };
  await registerMeshService(agent, apiSpec);
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web as number,
    sidecarPort: ports.webSidecar as number,
    protocol: 'http',
    upstreams: [{ destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' }],
  });
  await registerMeshService(agent, { id: 'batch', name: 'batch', port: ports.batch as number, sidecarPort: ports.batchSidecar as number });
  await agent.put('/v1/config', {
    Kind: 'service-intentions',
    Name: 'api',
    Sources: [
      { Name: 'web', Action: 'allow' },
      { Name: 'batch', Action: 'deny' },
    ],
  });
  await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir);
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('-stats-addr with real Consul and HAProxy', () => {
  test('/ready is 503 from the start until the first configuration is live, then 200 while HAProxy serves', async () => {
    const startedAt = performance.now();
    api = new SidecarProcess([
      '-sidecar-for',
      'api',
      '-http-addr',
      agent.httpAddr,
      '-haproxy-cfg-base-path',
      baseDir,
      '-log-level',
      'debug',
      '-stats-addr',
      `127.0.0.1:${ports.apiStats as number}`,
      '-stats-service-register',
      '-shutdown-grace',
      '3s',
    ]);
    sidecars.push(api);
    const answers: Array<{ status: number; body: string; ms: number }> = [];
    await waitFor(
      '/ready 200',
      async () => {
        if (api?.process.exitCode !== null) throw new Error(`sidecar exited: ${api?.stderr ?? ''}`);
        const answer = await statsGet('/ready');
        if (answer === undefined) return undefined;
        answers.push({ ...answer, ms: Math.round(performance.now() - startedAt) });
        return answer.status === 200 ? true : undefined;
      },
      30_000,
      5,
    );
    // HAProxy serves the moment /ready says so: the public listener accepts a connection.
    const socket = await tcpConnect(ports.apiSidecar as number);
    socket.destroy();
    const notReady = answers.filter((a) => a.status === 503);
    const first = answers[0];
    const ready = answers.at(-1);
    console.log(`/ready: first answer ${first?.status} '${first?.body}' at ${first?.ms} ms, ${notReady.length} answers 503, 200 at ${ready?.ms} ms`);
    assert.ok(notReady.length > 0, 'the stats server answered before the first configuration was live');
    assert.equal(first?.status, 503);
    assert.equal(first?.body, 'no configuration applied yet');
    assert.equal(ready?.body, 'ready');
    await api.waitForLog('sidecar ready', 5_000);
    assert.deepEqual(await statsGet('/health'), { status: 200, body: 'alive' });
    assert.equal((await statsGet('/nope'))?.status, 404);
  });

  test('a -stats-addr in use stops the start with a clear error, and the run directory is removed', async () => {
    const taken = new SidecarProcess(['-sidecar-for', 'batch', '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', baseDir, '-stats-addr', `127.0.0.1:${ports.apiStats as number}`]);
    sidecars.push(taken);
    const exit = await taken.exited;
    assert.equal(exit.code, 1);
    assert.match(taken.stderr, new RegExp(`Cannot serve -stats-addr 127\\.0\\.0\\.1:${ports.apiStats as number}: the address is already in use`));
    const runDir = taken.find('created run directory')?.runDir as string;
    assert.ok(runDir !== undefined);
    assert.equal(existsSync(runDir), false, 'the run directory was removed');
  });

  test("/metrics: HAProxy's request and connection counters move with traffic, next to ours", async () => {
    const before = await scrape();
    assert.equal(sampleValue(before, 'haproxy_connect_haproxy_scrape_success'), 1);
    assert.equal(sampleValue(before, 'haproxy_connect_ready'), 1);
    assert.equal(sampleValue(before, 'haproxy_connect_haproxy_state', { state: 'running' }), 1);
    assert.ok((sampleValue(before, 'haproxy_connect_leaf_certificate_expiry_seconds') ?? 0) > 3_600, 'a fresh leaf is valid for hours');
    assert.ok(before.types.has('haproxy_process_build_info'), "HAProxy's own families are there");
    // Through web's sidecar: web → api over mTLS, into api's public listener.
    await waitFor('web -> api', async () => ((await httpGet(ports.webToApi as number, '/', PROBE_TIMEOUT_MS)).status === 200 ? true : undefined), 30_000, 100);
    const mid = await scrape();
    for (let i = 0; i < REQUESTS; i++) assert.equal((await httpGet(ports.webToApi as number, '/', PROBE_TIMEOUT_MS)).status, 200);
    const after = await scrape();
    const delta = (e1: Exposition, e2: Exposition, name: string, labels: Record<string, string>): number => sampleSum(e2, name, labels) - sampleSum(e1, name, labels);
    const requests = delta(mid, after, 'haproxy_frontend_http_requests_total', { proxy: 'public_listener' });
    const responses = delta(mid, after, 'haproxy_backend_http_responses_total', { proxy: 'local_app', code: '2xx' });
    const connections = delta(before, after, 'haproxy_frontend_connections_total', { proxy: 'public_listener' });
    console.log(`${REQUESTS} requests: public_listener http_requests_total +${requests}, local_app 2xx +${responses}, connections_total +${connections} (pooled by web's sidecar)`);
    assert.ok(requests >= REQUESTS, `http_requests_total moved by ${requests}`);
    assert.ok(responses >= REQUESTS, `2xx responses moved by ${responses}`);
    assert.ok(connections >= 1 && connections < REQUESTS, `connections_total moved by ${connections}`);
    assert.ok(delta(before, after, 'haproxy_connect_intention_decisions_total', { result: 'allow' }) >= 1, 'web was allowed');
  });

  test('an intention denial is counted, with the decision latency', async () => {
    const before = await scrape();
    const batch = await leafOf('batch');
    const rootsJson = await agent.get<{ Roots: Array<{ RootCert: string }> }>('/v1/agent/connect/ca/roots');
    const answer = await tlsHttpProbe({
      port: ports.apiSidecar as number,
      ca: rootsJson.Roots.map((r) => r.RootCert).join('\n'),
      cert: batch.CertPEM,
      key: batch.PrivateKeyPEM,
      timeoutMs: PROBE_TIMEOUT_MS,
    });
    assert.ok(answer.startsWith('HTTP/1.1 403'), `batch must be denied (403), got ${answer.slice(0, 80)}`);
    const after = await waitFor(
      'the denial counted',
      async () => {
        const e = await scrape();
        return (sampleValue(e, 'haproxy_connect_intention_decisions_total', { result: 'deny' }) ?? 0) > (sampleValue(before, 'haproxy_connect_intention_decisions_total', { result: 'deny' }) ?? 0)
          ? e
          : undefined;
      },
      10_000,
      50,
    );
    assert.equal(
      (sampleValue(after, 'haproxy_connect_intention_decisions_total', { result: 'deny' }) ?? 0) - (sampleValue(before, 'haproxy_connect_intention_decisions_total', { result: 'deny' }) ?? 0),
      1,
    );
    const count = sampleValue(after, 'haproxy_connect_intention_decision_duration_seconds_count') ?? 0;
    const sum = sampleValue(after, 'haproxy_connect_intention_decision_duration_seconds_sum') ?? 0;
    console.log(`intention decisions: ${count}, mean ${((sum / count) * 1e6).toFixed(1)} µs`);
    assert.ok(count >= 2);
    assert.equal(sampleValue(after, 'haproxy_connect_intention_decisions_total', { result: 'error' }), 0);
  });

  test('a reload is counted under its reason category (an upstream added to the registration)', async () => {
    const before = await scrape();
    assert.equal(sampleValue(before, 'haproxy_connect_haproxy_reloads_total', { reason: 'initial' }), 1);
    const reloadsBefore = api?.logs.filter((l) => l.msg === 'reloading haproxy').length ?? 0;
    await registerMeshService(agent, { ...apiSpec, upstreams: [{ destinationName: 'web', localBindPort: ports.apiToWeb as number, protocol: 'http' }] });
    const log = await waitFor('the reload', async () => api?.logs.filter((l) => l.msg === 'reloading haproxy')[reloadsBefore], 30_000, 50);
    const after = await waitFor(
      'the reload counted',
      async () => {
        const e = await scrape();
        return sampleValue(e, 'haproxy_connect_haproxy_reloads_total', { reason: 'upstream' }) === 1 ? e : undefined;
      },
      10_000,
      50,
    );
    console.log(`reload reasons ${JSON.stringify(log.reasons)} → counted under reason="upstream"`);
    assert.equal(sampleSum(after, 'haproxy_connect_haproxy_reloads_total') - sampleSum(before, 'haproxy_connect_haproxy_reloads_total'), 1);
    assert.equal(
      (sampleValue(after, 'haproxy_connect_config_applies_total', { method: 'reload', result: 'ok' }) ?? 0) -
        (sampleValue(before, 'haproxy_connect_config_applies_total', { method: 'reload', result: 'ok' }) ?? 0),
      1,
    );
    assert.equal(sampleValue(after, 'haproxy_connect_consul_watches', { watch: 'upstream', state: 'ok' }), 1, "the new upstream's watch answered");
    assert.ok((sampleValue(after, 'haproxy_connect_consul_watch_updates_total', { watch: 'registration' }) ?? 0) >= 1);
  });

  test('the stats service is in Consul with a passing check, /ready turns 503 at shutdown, and the service is gone after exit', async () => {
    const check = await waitFor(
      'a passing check on api-connect-stats',
      async () => {
        const checks = await agent.get<Array<{ Status: string; Output: string; ServiceID: string }>>('/v1/health/checks/api-connect-stats');
        return checks.find((c) => c.Status === 'passing');
      },
      40_000,
      500,
    );
    assert.equal(check.ServiceID, 'api-sidecar-proxy-stats');
    assert.match(check.Output, /alive/);
    const services = await agent.get<Record<string, { Service: string; Port: number; Address: string }>>('/v1/agent/services');
    assert.deepEqual(
      { name: services['api-sidecar-proxy-stats']?.Service, port: services['api-sidecar-proxy-stats']?.Port, address: services['api-sidecar-proxy-stats']?.Address },
      { name: 'api-connect-stats', port: ports.apiStats, address: '127.0.0.1' },
    );

    // An open connection keeps HAProxy's soft stop (and so the shutdown) going for -shutdown-grace.
    const held = await tcpConnect(ports.apiSidecar as number);
    held.on('error', () => {});
    const sidecar = api as SidecarProcess;
    sidecar.process.kill('SIGTERM');
    const seen: number[] = [];
    await waitFor(
      'the stats server closed',
      async () => {
        const answer = await statsGet('/ready');
        if (answer !== undefined) seen.push(answer.status);
        return answer === undefined ? true : undefined;
      },
      30_000,
      10,
    );
    held.destroy();
    const exit = await sidecar.exited;
    assert.equal(exit.code, 0, sidecar.stderr);
    const first503 = seen.indexOf(503);
    console.log(`/ready after SIGTERM: ${seen.filter((s) => s === 200).length} x 200 (in flight), then ${seen.filter((s) => s === 503).length} x 503 until it closed`);
    assert.ok(first503 >= 0, `no 503 during shutdown: ${seen.join(',')}`);
    assert.ok(
      seen.slice(first503).every((s) => s === 503),
      `200 after 503: ${seen.join(',')}`,
    );
    assert.ok(sidecar.find('deregistered the stats service'));

    const after = await agent.get<Record<string, unknown>>('/v1/agent/services');
    assert.equal(after['api-sidecar-proxy-stats'], undefined);
    // The real agent answers a deregistration of an unknown ID without an error the client surfaces.
    const client = new ConsulHttpClient({ address: agent.httpAddr });
    try {
      await client.deregisterService('api-sidecar-proxy-stats', AbortSignal.timeout(PROBE_TIMEOUT_MS));
    } finally {
      await client.close();
    }
  });
});
