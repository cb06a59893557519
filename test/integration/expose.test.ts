/**
 * Proxy.Expose with a real Consul 1.16.2 dev agent and real HAProxy through the daemon:
 * - `Expose.Checks`: the agent reroutes the service's HTTP and gRPC checks (interval 1 s) to
 *   ports on the sidecar; they turn passing through it and stay passing;
 * - `Expose.Paths`: a plain listener answers its path (query or not) from the app, and 404 for
 *   any other path; a hostile path is served as exactly that path;
 * - bad input and collisions are logged naming the value (and both sides) while the rest applies;
 * - removing a path from the registration removes its listener, live, through a reload that says why.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createH2Server } from 'node:http2';
import { type AddressInfo, connect as netConnect, createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { ConsulDevAgent } from '../../devtools/consul-dev-agent.js';
import { freePort, freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet } from '../../devtools/probes.js';
import { msSince, note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';

const STAY_PASSING_MS = 5_000;
const SAMPLE_EVERY_MS = 250;

interface AgentCheck {
  CheckID: string;
  Status: string;
  Output: string;
  ExposedPort: number;
}

let agent: ConsulDevAgent;
let baseDir: string;
const sidecars: SidecarProcess[] = [];
let app: TcpServer;
let ports: { app: number; sidecar: number; metrics: number; hostile: number; held: number; exposeMin: number };

/** Two consecutive free ports (the agent hands out exposed check ports from a range). */
async function consecutiveFreePorts(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = await freePort();
    const free = await new Promise<boolean>((resolve) => {
      const probe = createTcpServer();
      probe.once('error', () => resolve(false));
      probe.listen(first + 1, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return first;
  }
  throw new Error('no two consecutive free ports');
}

/**
 * The app on one port, as a gRPC service with an HTTP side usually is: HTTP/1.1 (anything answered
 * 200 naming the path, so a 404 can only come from the sidecar) and, for a connection that opens
 * with the HTTP/2 preface, a clear-text gRPC health service whose Check answers SERVING. The agent's
 * API does not publish a check's own port, so the sidecar sends rerouted checks to this port
 * (LocalServicePort).
 */
async function startApp(port: number): Promise<TcpServer> {
  const http1 = createHttpServer((req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(`app ${req.url ?? ''}`));
  const http2 = createH2Server();
  http2.on('stream', (stream, headers) => {
    if (headers[':path'] !== '/grpc.health.v1.Health/Check') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
      return;
    }
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      // Length-prefixed message: not compressed, 2 bytes, HealthCheckResponse{status: SERVING}.
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
    });
  });
  // Node's HTTP/2 session reads the socket's handle itself (it cannot be handed a socket whose
  // first bytes were read): HTTP/2 connections are piped to it on a port of its own.
  await new Promise<void>((resolve) => http2.listen(0, '127.0.0.1', () => resolve()));
  const h2Port = (http2.address() as AddressInfo).port;
  const server = createTcpServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      if (chunk.subarray(0, 3).toString('latin1') === 'PRI') {
        const inner = netConnect(h2Port, '127.0.0.1');
        inner.on('error', () => socket.destroy());
        socket.on('error', () => inner.destroy());
        inner.write(chunk);
        socket.pipe(inner).pipe(socket);
      } else {
        socket.unshift(chunk);
        http1.emit('connection', socket);
      }
      socket.resume();
    });
  });
  server.on('close', () => http2.close());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** One raw HTTP/1.1 request with exactly this request target; the status code, or the error. */
function rawStatus(port: number, target: string): Promise<number | string> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => socket.destroy(new Error('timeout')), 5_000);
    socket.on('connect', () => socket.write(`GET ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`));
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? err.message);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      resolve(m === null ? `no answer: ${JSON.stringify(data.slice(0, 100))}` : Number(m[1]));
    });
  });
}

async function refused(port: number): Promise<boolean> {
  return (await rawStatus(port, '/')) === 'ECONNREFUSED';
}

function registration(paths: Array<Record<string, unknown>>): Record<string, unknown> {
  return {
    ID: 'web',
    Name: 'web',
    Port: ports.app,
    Address: '127.0.0.1',
    Checks: [
      { CheckID: 'web-http', Name: 'web HTTP', HTTP: `http://127.0.0.1:${ports.app}/health`, Interval: '1s' },
      { CheckID: 'web-grpc', Name: 'web gRPC', GRPC: `127.0.0.1:${ports.app}`, Interval: '1s' },
    ],
    Connect: {
      SidecarService: {
        Port: ports.sidecar,
        Checks: [{ Name: 'Connect Sidecar Listening', TCP: `127.0.0.1:${ports.sidecar}`, Interval: '1s' }],
        Proxy: { Config: { protocol: 'http' }, Expose: { Checks: true, Paths: paths } },
      },
    },
  };
}

const checks = async (): Promise<Map<string, AgentCheck>> => new Map(Object.entries(await agent.get<Record<string, AgentCheck>>('/v1/agent/checks')));
const web = (): SidecarProcess => sidecars[0] as SidecarProcess;
const leftOut = (item: string): Record<string, unknown> | undefined =>
  web()
    .logs.filter((l) => l.msg === 'expose left out of the configuration; everything else keeps updating' && l.item === item)
    .at(-1);

describe('Proxy.Expose with a real Consul 1.16.2 agent and real HAProxy', () => {
  before(async () => {
    const exposeMin = await consecutiveFreePorts();
    const [appPort, sidecar, metrics, hostile, held] = (await freePorts(5)) as [number, number, number, number, number];
    ports = { app: appPort, sidecar, metrics, hostile, held, exposeMin };
    agent = await ConsulDevAgent.start({ extraConfig: `ports { expose_min_port = ${exposeMin}, expose_max_port = ${exposeMin + 2} }` });
    baseDir = await mkdtemp(join(tmpdir(), 'hc-expose-'));
    app = await startApp(appPort);
  });
  after(async () => {
    for (const s of sidecars) await s.stop();
    await new Promise<void>((resolve) => (app === undefined ? resolve() : app.close(() => resolve())));
    await agent?.stop();
    if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
  });

  test('expose { checks = true }: the HTTP and gRPC checks turn passing through the sidecar and stay passing', async () => {
    await agent.put('/v1/agent/service/register', registration([{ Path: '/metrics', LocalPathPort: ports.app, ListenerPort: ports.metrics }]));
    // Rerouted to the sidecar, where nothing listens yet: critical.
    const before = await waitFor('the rerouted checks to fail', async () => {
      const c = await checks();
      const http = c.get('web-http');
      const grpc = c.get('web-grpc');
      return http?.Status === 'critical' && grpc?.Status === 'critical' && http.ExposedPort > 0 && grpc.ExposedPort > 0 && http.Output !== '' && grpc.Output !== '' ? { http, grpc } : undefined;
    });
    assert.deepEqual(new Set([before.http.ExposedPort, before.grpc.ExposedPort]), new Set([ports.exposeMin, ports.exposeMin + 1]));
    note(`before the sidecar: ${before.http.Output} | ${before.grpc.Output}`);

    const started = performance.now();
    await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir);
    const ready = msSince(started);
    let last = new Map<string, AgentCheck>();
    const passing = await waitFor(
      'both checks passing through the sidecar',
      async () => {
        last = await checks();
        return last.get('web-http')?.Status === 'passing' && last.get('web-grpc')?.Status === 'passing' ? last : undefined;
      },
      30_000,
      50,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([...last.values()].map((c) => [c.CheckID, c.Status, c.Output]))}`);
    });
    const passingMs = msSince(started);
    assert.match(passing.get('web-http')?.Output ?? '', new RegExp(`^HTTP GET http://(127\\.0\\.0\\.1)?:${before.http.ExposedPort}/health: 200 OK Output: app /health`));
    assert.match(passing.get('web-grpc')?.Output ?? '', /success/);

    // Stays passing: every sample, for STAY_PASSING_MS (five runs of each check).
    const samples: string[] = [];
    const until = performance.now() + STAY_PASSING_MS;
    while (performance.now() < until) {
      const c = await checks();
      samples.push(`${c.get('web-http')?.Status}/${c.get('web-grpc')?.Status}`);
      await new Promise((r) => setTimeout(r, SAMPLE_EVERY_MS));
    }
    assert.deepEqual(new Set(samples), new Set(['passing/passing']), samples.join(' '));
    // The check listeners forward only the check's path.
    assert.equal(await rawStatus(before.http.ExposedPort, '/other'), 404);
    assert.equal((await httpGet(before.http.ExposedPort, '/health')).body, 'app /health');
    note(`checks passing ${passingMs} ms after the daemon started (sidecar ready after ${ready} ms); ${samples.length} samples over ${STAY_PASSING_MS} ms all passing`);
  });

  test('an exposed path answers from the app; any other path on that port is 404 from the sidecar', async () => {
    assert.deepEqual(await httpGet(ports.metrics, '/metrics'), { status: 200, body: 'app /metrics' });
    assert.deepEqual(await httpGet(ports.metrics, '/metrics?format=prometheus'), { status: 200, body: 'app /metrics?format=prometheus' });
    for (const other of ['/', '/metrics/', '/metricsx', '/Metrics', '/health', '/%2Fmetrics']) {
      const res = await httpGet(ports.metrics, other);
      assert.deepEqual(res, { status: 404, body: '' }, `GET ${other}`);
    }
    // Plain: no TLS, no client certificate, no intentions on this port.
    assert.equal((await httpGet(ports.metrics, '/metrics')).status, 200);
  });

  test('bad input, collisions and a port another process holds are logged naming the value (and both sides); the rest applies', async () => {
    const hostilePath = '/a\'b$HOME{x}|"c\\';
    const holder = createTcpServer();
    await new Promise<void>((resolve) => holder.listen(ports.held, '0.0.0.0', () => resolve()));
    await agent.put(
      '/v1/agent/service/register',
      registration([
        { Path: '/metrics', LocalPathPort: ports.app, ListenerPort: ports.metrics },
        // Consul refuses duplicate listener ports itself; this one is never bound (refused first).
        { Path: 'not-absolute', LocalPathPort: ports.app, ListenerPort: 1 },
        { Path: '/public', LocalPathPort: ports.app, ListenerPort: ports.sidecar },
        { Path: hostilePath, LocalPathPort: ports.app, ListenerPort: ports.hostile },
        { Path: '/held', LocalPathPort: ports.app, ListenerPort: ports.held },
      ]),
    );
    const notAbsolute = await waitFor('the relative path to be logged', async () => leftOut('Expose.Paths[1]'));
    assert.match(notAbsolute.reason as string, /Path 'not-absolute' is not absolute/);
    assert.equal(notAbsolute.level, 'warn');
    const collision = await waitFor('the collision to be logged', async () => leftOut('Expose.Paths[2]'));
    assert.match(collision.reason as string, new RegExp(`Expose\\.Paths\\[2\\]: its listener \\S+:${ports.sidecar} overlaps the listener of frontend 'public_listener'`));
    // The hostile path is served as exactly that path (raw request target), and nothing else is.
    const hostile = await waitFor('the hostile path to be served', async () => {
      const status = await rawStatus(ports.hostile, hostilePath);
      return status === 200 ? status : undefined;
    });
    assert.equal(hostile, 200);
    assert.equal(await rawStatus(ports.hostile, '/a'), 404);
    assert.equal(await rawStatus(ports.hostile, '/a\'b$HOME{x}|"c'), 404);
    const held = await waitFor('the held port to be logged', async () => leftOut('Expose.Paths[4]'));
    assert.match(held.reason as string, new RegExp(`Expose\\.Paths\\[4\\]: its listener \\S+:${ports.held} cannot be bound \\(EADDRINUSE: another process holds it\\)`));
    // The rest keeps applying: the metrics path and the checks.
    assert.equal((await httpGet(ports.metrics, '/metrics')).status, 200);
    const c = await checks();
    assert.equal(c.get('web-http')?.Status, 'passing');
    // Once the port is free, the path is served (tried again every 10 s).
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    const freed = performance.now();
    await waitFor('the held path to be served once the port is free', async () => ((await rawStatus(ports.held, '/held')) === 200 ? true : undefined), 30_000, 100);
    note(`held port served ${msSince(freed)} ms after it was freed`);
    note(`left out: ${notAbsolute.reason as string} | ${collision.reason as string} | ${held.reason as string}`);
  });

  test('removing a path from the registration removes its listener, live, with the reason in the reload', async () => {
    const reloadsBefore = web().logs.filter((l) => l.msg === 'reloading haproxy').length;
    const started = performance.now();
    await agent.put('/v1/agent/service/register', registration([{ Path: '/metrics', LocalPathPort: ports.app, ListenerPort: ports.metrics }]));
    await waitFor('the hostile path listener to go', async () => ((await refused(ports.hostile)) ? true : undefined), 30_000, 20);
    const removedMs = msSince(started);
    const reload = web()
      .logs.filter((l) => l.msg === 'reloading haproxy')
      .slice(reloadsBefore)
      .find((l) => (l.reasons as string[]).includes(`frontend exposed_path_${ports.hostile} removed`) && (l.reasons as string[]).includes(`frontend exposed_path_${ports.held} removed`));
    assert.ok(
      reload !== undefined,
      JSON.stringify(
        web()
          .logs.filter((l) => l.msg === 'reloading haproxy')
          .slice(reloadsBefore),
      ),
    );
    // The dropped items are back (no longer left out), the metrics path still answers.
    await waitFor('the left-out items to be cleared', async () =>
      web().logs.some((l) => l.msg === 'expose no longer left out of the configuration' && l.item === 'Expose.Paths[2]') ? true : undefined,
    );
    assert.equal((await httpGet(ports.metrics, '/metrics')).status, 200);

    const started2 = performance.now();
    await agent.put('/v1/agent/service/register', registration([]));
    await waitFor('the metrics listener to go', async () => ((await refused(ports.metrics)) ? true : undefined), 30_000, 20);
    const removed2Ms = msSince(started2);
    const c = await checks();
    assert.equal(c.get('web-http')?.Status, 'passing', 'the checks keep passing');
    assert.equal((await httpGet(c.get('web-http')?.ExposedPort as number, '/health')).status, 200);
    note(`listener gone ${removedMs} ms and ${removed2Ms} ms after the registration changed; reload reasons: ${JSON.stringify(reload.reasons)}`);
  });
});
