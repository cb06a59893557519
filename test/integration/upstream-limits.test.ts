/**
 * Upstream `limits` and `passive_health_check` end to end, with a real Consul dev agent and real
 * HAProxy through haproxy-connect sidecars:
 * - `max_connections = 3` (from service-defaults UpstreamConfig, merged in by the agent) admits
 *   three concurrent connections to a TCP upstream listener and closes the fourth;
 * - `max_concurrent_requests = 2` on an HTTP upstream: the third request in flight gets 503 with
 *   `x-envoy-overloaded: true`;
 * - an HTTP instance answering 500 is ejected after `max_failures` consecutive errors (the other
 *   instance gets the traffic) and returns after `base_ejection_time`; an instance added at
 *   runtime (through the runtime API, no reload) is ejected the same way;
 * - a limit of the wrong type is logged with the value and the upstream, falls back to its
 *   default, and the rest of the upstream (its passive health) keeps applying.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, startTcpEcho, startTunableHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet } from '../../devtools/probes.js';
import { note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';

/** Short outlier-detection settings so the test does not wait Envoy's 30 s. */
const MAX_FAILURES = 3;
const BASE_EJECTION_MS = 3_000;
const MAX_CONNECTIONS = 3;
/**
 * HAProxy runs each server's first health check within a few seconds of its start (spread over
 * the servers; measured on 2.6.12: 6 servers with `inter 1h` between 0.3 and 2.1 s); an
 * ejection before that check ends at it (README). The ejection test starts after this.
 */
const FIRST_CHECKS_DONE_MS = 4_000;
const MAX_CONCURRENT_REQUESTS = 2;
/** How long the slow app takes to answer: long enough for every concurrent request to be in flight. */
const SLOW_ANSWER_MS = 1_500;
/** How long a connection may take to show its greeting (or be closed) through two sidecars. */
const CONNECTION_SETTLE_MS = 3_000;

let agent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let ports: Record<string, number>;
let web: SidecarProcess;
let webReadyAt: number;
let api2: FailingApp;

const port = (name: string): number => ports[name] as number;

interface FailingApp extends RunningApp {
  /** Requests it has answered (health checks end at the sidecar and never reach it). */
  served: number;
}

/** An HTTP app that answers every request with 500 `failing <name>`. */
async function startFailingApp(name: string, listenPort: number): Promise<FailingApp> {
  const server: Server = createServer((_req, res) => {
    app.served++;
    res.writeHead(500, { 'content-type': 'text/plain' }).end(`failing ${name}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', () => resolve());
  });
  const app: FailingApp = {
    port: listenPort,
    served: 0,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return app;
}

/** Asks through web's api upstream until `app` has answered `count` requests; the time of that answer. */
async function askUntilServed(app: FailingApp, count: number): Promise<number> {
  return waitFor(
    `${count} answers from a failing instance`,
    async () => {
      await ask();
      return app.served >= count ? performance.now() : undefined;
    },
    30_000,
    20,
  );
}

/** Who answered: the body of a 200, or `status <n> <body>`. */
async function ask(): Promise<string> {
  const { status, body } = await httpGet(port('webToApi'));
  return status === 200 ? body : `status ${status} ${body}`;
}

/** A connection to the TCP upstream: `greeted` when the echo app's greeting arrived, `closed` when it was closed first. */
function openHeld(held: Socket[]): Promise<'greeted' | 'closed' | 'silent'> {
  return new Promise((resolve) => {
    const socket = connect(port('webToHold'), '127.0.0.1');
    held.push(socket);
    let data = '';
    const timer = setTimeout(() => resolve('silent'), CONNECTION_SETTLE_MS);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      data += chunk.toString();
      if (data.includes('hold\n')) {
        clearTimeout(timer);
        resolve('greeted');
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data.includes('hold\n') ? 'greeted' : 'closed');
    });
  });
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-limits-'));
  const names = ['hold', 'holdSidecar', 'api1', 'api1Sidecar', 'api2', 'api2Sidecar', 'api3', 'api3Sidecar', 'web', 'webSidecar', 'webToHold', 'webToApi', 'slow', 'slowSidecar', 'webToSlow'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  apps.push(await startTcpEcho('hold', port('hold')));
  const slow = await startTunableHttpApp('slow', port('slow'));
  slow.delayMs = SLOW_ANSWER_MS;
  apps.push(slow);
  apps.push(await startHttpApp('api-1', port('api1')));
  api2 = await startFailingApp('api-2', port('api2'));
  apps.push(api2);
  // The agent merges this into web's `hold` upstream as `limits: { MaxConnections: 3 }`.
  await agent.put('/v1/config', { Kind: 'service-defaults', Name: 'web', UpstreamConfig: { Overrides: [{ Name: 'hold', Limits: { MaxConnections: MAX_CONNECTIONS } }] } });
  await registerMeshService(agent, { id: 'hold', name: 'hold', port: port('hold'), sidecarPort: port('holdSidecar') });
  await registerMeshService(agent, { id: 'slow', name: 'slow', port: port('slow'), sidecarPort: port('slowSidecar'), protocol: 'http' });
  await registerMeshService(agent, { id: 'api-1', name: 'api', port: port('api1'), sidecarPort: port('api1Sidecar'), protocol: 'http' });
  await registerMeshService(agent, { id: 'api-2', name: 'api', port: port('api2'), sidecarPort: port('api2Sidecar'), protocol: 'http' });
  await agent.put('/v1/agent/service/register', {
    ID: 'web',
    Name: 'web',
    Port: port('web'),
    Address: '127.0.0.1',
    Connect: {
      SidecarService: {
        Port: port('webSidecar'),
        Checks: [{ Name: 'Connect Sidecar Listening', TCP: `127.0.0.1:${port('webSidecar')}`, Interval: '1s' }],
        Proxy: {
          Upstreams: [
            { DestinationName: 'hold', LocalBindPort: port('webToHold') },
            { DestinationName: 'slow', LocalBindPort: port('webToSlow'), Config: { protocol: 'http', limits: { max_concurrent_requests: MAX_CONCURRENT_REQUESTS } } },
            {
              DestinationName: 'api',
              LocalBindPort: port('webToApi'),
              Config: {
                protocol: 'http',
                // Wrong type: logged, falls back to 1024; the passive health below still applies.
                limits: { max_concurrent_requests: 'lots' },
                passive_health_check: { interval: '1s', max_failures: MAX_FAILURES, base_ejection_time: `${BASE_EJECTION_MS}ms` },
              },
            },
          ],
        },
      },
    },
  });
  await Promise.all(['hold', 'slow', 'api-1', 'api-2'].map((s) => startReadySidecar(sidecars, s, agent.httpAddr, baseDir)));
  web = await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir);
  webReadyAt = performance.now();
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('upstream limits and passive health with real Consul and HAProxy', () => {
  test('max_connections = 3 admits three concurrent connections and closes the fourth; a freed slot is usable again', async () => {
    await waitFor('hold through the mesh', async () => {
      const held: Socket[] = [];
      const result = await openHeld(held);
      for (const s of held) s.destroy();
      return result === 'greeted' ? true : undefined;
    });
    // Let the probe connections' streams end before counting.
    await new Promise((r) => setTimeout(r, 200));
    const held: Socket[] = [];
    try {
      const results: string[] = [];
      // One after the other, so each is counted before the next arrives.
      for (let i = 0; i < MAX_CONNECTIONS + 1; i++) results.push(await openHeld(held));
      note(`max_connections ${MAX_CONNECTIONS}: ${results.join(', ')}`);
      assert.deepEqual(results, ['greeted', 'greeted', 'greeted', 'closed']);
      held[0]?.destroy();
      const again = await waitFor(
        'a connection admitted after one closed',
        async () => {
          const result = await openHeld(held);
          return result === 'greeted' ? result : undefined;
        },
        10_000,
        200,
      );
      assert.equal(again, 'greeted');
    } finally {
      for (const s of held) s.destroy();
    }
  });

  test('max_concurrent_requests = 2 on an HTTP upstream: two requests in flight, the third gets 503 with x-envoy-overloaded', async () => {
    await waitFor('slow through the mesh', async () => ((await httpGet(port('webToSlow'))).status === 200 ? true : undefined));
    const answers = await Promise.all(
      Array.from({ length: MAX_CONCURRENT_REQUESTS + 1 }, async (_, i) => {
        await new Promise((r) => setTimeout(r, i * 100));
        const res = await fetch(`http://127.0.0.1:${port('webToSlow')}/`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(10_000) });
        await res.text();
        return `${res.status}${res.headers.get('x-envoy-overloaded') === 'true' ? ' overloaded' : ''}`;
      }),
    );
    note(`max_concurrent_requests ${MAX_CONCURRENT_REQUESTS}: ${answers.join(', ')}`);
    assert.deepEqual(answers, ['200', '200', '503 overloaded']);
    assert.equal((await httpGet(port('webToSlow'))).status, 200, 'served again once the others finished');
  });

  test('a bad limit is logged with its value and upstream, and falls back to its default', async () => {
    const line = await waitFor('the bad limit log line', async () => web.logs.find((l) => l.kind === 'setting'));
    note(`log: ${JSON.stringify(line)}`);
    assert.equal(line.item, 'Upstreams[2] limits.max_concurrent_requests');
    assert.match(String(line.reason), /'lots' is not a number; using the default 1024/);
    assert.match(String(line.reason), /service:default\/api@/);
    assert.equal(line.level, 'warn');
  });

  test('an instance answering 500 is ejected after max_failures errors and returns after base_ejection_time', async () => {
    const settle = webReadyAt + FIRST_CHECKS_DONE_MS - performance.now();
    if (settle > 0) await new Promise((r) => setTimeout(r, settle));
    // Every answer of api-2 is an error, so its MAX_FAILURES-th answer ejects it.
    const ejectedAt = await askUntilServed(api2, MAX_FAILURES);
    assert.equal(api2.served, MAX_FAILURES);
    const during: string[] = [];
    while (performance.now() - ejectedAt < BASE_EJECTION_MS - 1_000) {
      during.push(await ask());
      await new Promise((r) => setTimeout(r, 50));
    }
    note(`while api-2 is ejected: ${during.length} requests, answers ${JSON.stringify([...new Set(during)])}`);
    assert.ok(during.length >= 10);
    assert.deepEqual([...new Set(during)], ['hello from api-1']);
    assert.equal(api2.served, MAX_FAILURES);
    const back = await waitFor(
      'api-2 back after its ejection time',
      async () => {
        await ask();
        return api2.served > MAX_FAILURES ? performance.now() - ejectedAt : undefined;
      },
      BASE_EJECTION_MS + 10_000,
      100,
    );
    note(`api-2 back ${Math.round(back)} ms after its ejection (base_ejection_time ${BASE_EJECTION_MS} ms)`);
    assert.ok(back >= BASE_EJECTION_MS - 500, `back after ${back} ms`);
  });

  test('an instance added at runtime (no reload) is ejected the same way', async () => {
    const api3 = await startFailingApp('api-3', port('api3'));
    apps.push(api3);
    const reloadsBefore = web.logs.filter((l) => l.msg === 'reloading haproxy').length;
    await registerMeshService(agent, { id: 'api-3', name: 'api', port: port('api3'), sidecarPort: port('api3Sidecar'), protocol: 'http' });
    await startReadySidecar(sidecars, 'api-3', agent.httpAddr, baseDir);
    await askUntilServed(api3, MAX_FAILURES);
    assert.equal(web.logs.filter((l) => l.msg === 'reloading haproxy').length, reloadsBefore, 'api-3 was added without a reload');
    const afterEjection: string[] = [];
    for (let i = 0; i < 12; i++) afterEjection.push(await ask());
    note(`after api-3's ${MAX_FAILURES} errors: ${JSON.stringify([...new Set(afterEjection)])}`);
    assert.equal(api3.served, MAX_FAILURES, `api-3 still served: ${afterEjection.join(', ')}`);
  });
});
