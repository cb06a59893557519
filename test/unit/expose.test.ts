/**
 * Proxy.Expose: parsing the registration's Expose block and the agent's checks, translating the
 * exposed paths (collisions and bad values left out, the rest applied), rendering them (hostile
 * paths quoted or refused; every config checked by the real `haproxy -c`), and the planner's reason.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOutputPath, exposedChecksOf, parseExpose } from '../../src/consul/expose.js';
import { parseProxyRegistration } from '../../src/consul/registration.js';
import { agentServiceSchema } from '../../src/consul/schemas.js';
import { exposePathProblem, type ExposeConfig, type ExposedCheck } from '../../src/domain/expose.js';
import type { Snapshot } from '../../src/domain/snapshot.js';
import type { HaproxyModel } from '../../src/haproxy/model.js';
import { plan } from '../../src/haproxy/plan.js';
import { render } from '../../src/haproxy/render.js';
import { translate } from '../../src/translate/translate.js';
import { probePort, unbindableExposedPorts } from '../../src/reconcile/exposed-ports.js';
import { createServer } from 'node:net';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { roots, snapshot, upstream, webLeaf } from '../helpers/fixtures.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { waitFor } from '../../devtools/ports.js';
import { SnapshotState } from '../../src/snapshot/fold.js';
import { SidecarWatches } from '../../src/snapshot/watches.js';

const RUN_DIR = '/run/haproxy-connect';

function withExpose(expose: ExposeConfig, exposedChecks: ExposedCheck[] = [], base: Snapshot = snapshot()): Snapshot {
  return { ...base, registration: { ...base.registration, expose }, ...(exposedChecks.length > 0 && { exposedChecks }) };
}

function path(source: string, listenerPort: number, p: string, localPathPort = 8080, protocol: 'http' | 'http2' = 'http') {
  return { source, listenerPort, path: p, localPathPort, protocol };
}

const tempDirs: string[] = [];
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function haproxyAccepts(model: HaproxyModel): void {
  const runDir = mkdtempSync(join(tmpdir(), 'hc-expose-'));
  tempDirs.push(runDir);
  const local = { ...model, global: { ...model.global, runDir } };
  for (const file of local.files) {
    writeFileSync(join(runDir, file.name), file.content, { mode: file.mode });
    chmodSync(join(runDir, file.name), file.mode);
  }
  writeFileSync(join(runDir, 'haproxy.cfg'), render(local));
  const result = spawnSync(HAPROXY_BIN, ['-c', '-f', join(runDir, 'haproxy.cfg')], { cwd: '/', encoding: 'utf8', timeout: 20_000 });
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, output);
  assert.doesNotMatch(output, /\[(WARNING|ALERT)\]/, output);
}

describe('parseExpose (Proxy.Expose of the registration)', () => {
  test('Consul JSON: paths with defaults, Protocol lower-cased, an unset LocalPathPort is the app port', () => {
    const parsed = parseExpose(
      {
        Checks: true,
        Paths: [
          { Path: '/metrics', LocalPathPort: 9090, ListenerPort: 21600 },
          { Path: '/grpc', LocalPathPort: 9091, ListenerPort: 21601, Protocol: 'HTTP2' },
          { Path: '/health', ListenerPort: 21602, ParsedFromCheck: false },
        ],
      },
      8080,
    );
    assert.deepEqual(parsed, {
      checks: true,
      paths: [path('Expose.Paths[0]', 21600, '/metrics', 9090), path('Expose.Paths[1]', 21601, '/grpc', 9091, 'http2'), path('Expose.Paths[2]', 21602, '/health', 8080)],
    });
  });

  test('nothing exposed: undefined', () => {
    assert.equal(parseExpose(undefined, 8080), undefined);
    assert.equal(parseExpose({}, 8080), undefined);
    assert.equal(parseExpose({ Checks: false, Paths: null }, 8080), undefined);
  });

  test('each bad path is refused with a reason naming the value; the good ones stay', () => {
    const parsed = parseExpose(
      {
        Paths: [
          { Path: 'metrics', LocalPathPort: 8080, ListenerPort: 21600 },
          { Path: '/ok', LocalPathPort: 8080, ListenerPort: 21601 },
          { Path: '/p', LocalPathPort: 8080, ListenerPort: 70000 },
          { Path: '/q', LocalPathPort: 8080, ListenerPort: 21603, Protocol: 'grpc' },
          { Path: '/r', LocalPathPort: -1, ListenerPort: 21604 },
          { Path: '/a\nserver evil 6.6.6.6:1', LocalPathPort: 8080, ListenerPort: 21605 },
          { Path: '/s?x=1', LocalPathPort: 8080, ListenerPort: 21606 },
          { Path: 7, ListenerPort: 21607 },
          'nope',
        ],
      },
      8080,
    );
    assert.deepEqual(parsed?.paths, [path('Expose.Paths[1]', 21601, '/ok')]);
    const reasons = (parsed?.refused ?? []).map((r) => r.reason);
    assert.equal(reasons.length, 8);
    assert.match(reasons[0] ?? '', /Expose\.Paths\[0\] Path 'metrics' is not absolute/);
    assert.match(reasons[1] ?? '', /ListenerPort 70000 of path '\/p' is not a port/);
    assert.match(reasons[2] ?? '', /Protocol 'grpc' of path '\/q' is not one of http, http2/);
    assert.match(reasons[3] ?? '', /LocalPathPort -1 of path '\/r' is not a port/);
    assert.match(reasons[4] ?? '', /holds a space or a control character/);
    assert.match(reasons[5] ?? '', /holds \? or #/);
    assert.match(reasons[6] ?? '', /Path 7 is not a string/);
    assert.match(reasons[7] ?? '', /Expose\.Paths\[8\] is 'nope', not an object/);
  });

  test('through the registration parser: a bad path leaves the proxy and the other paths alone', () => {
    const raw = agentServiceSchema.parse({
      Kind: 'connect-proxy',
      ID: 'web-sidecar-proxy',
      Service: 'web-sidecar-proxy',
      Port: 21000,
      Proxy: {
        DestinationServiceName: 'web',
        DestinationServiceID: 'web',
        LocalServicePort: 8080,
        Expose: {
          Checks: true,
          Paths: [
            { ListenerPort: 21600, Path: '/metrics', LocalPathPort: 8080 },
            { ListenerPort: 21601, Path: 'x', LocalPathPort: 8080 },
          ],
        },
      },
    });
    const registration = parseProxyRegistration(raw);
    assert.equal(registration.expose?.checks, true);
    assert.deepEqual(registration.expose?.paths, [path('Expose.Paths[0]', 21600, '/metrics')]);
    assert.equal(registration.expose?.refused?.[0]?.item, 'Expose.Paths[1]');
  });

  test('exposePathProblem', () => {
    assert.equal(exposePathProblem('/metrics'), undefined);
    assert.equal(exposePathProblem('/a\'b"c$d\\e{f}g;h|i%00'), undefined);
    assert.match(exposePathProblem('') ?? '', /empty/);
    assert.match(exposePathProblem('x/y') ?? '', /not absolute/);
    assert.match(exposePathProblem(`/${'a'.repeat(3000)}`) ?? '', /longer than/);
    assert.match(exposePathProblem('/a\0b') ?? '', /control/);
  });
});

describe('checks the agent reroutes (GET /v1/agent/checks)', () => {
  test('the path of an HTTP check comes from the URL in its output, in every form the agent writes', () => {
    assert.equal(checkOutputPath('HTTP GET http://:21500/health: 200 OK Output: fine'), '/health');
    assert.equal(checkOutputPath('HTTP POST http://10.0.0.1:21500/a/b?x=1: 503 Service Unavailable Output: '), '/a/b');
    assert.equal(checkOutputPath('Get "http://:21500/health": dial tcp :21500: connect: connection refused'), '/health');
    assert.equal(checkOutputPath('Get "http://[::1]:21500/h%20x": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'), '/h%20x');
    assert.equal(checkOutputPath('HTTP GET http://:21500: 200 OK Output: '), '/');
    assert.equal(checkOutputPath(''), undefined);
    assert.equal(checkOutputPath('Agent alive and reachable'), undefined);
  });

  test('only http and grpc checks of the service with an ExposedPort, sorted by check ID', () => {
    const checks = exposedChecksOf(
      [
        { CheckID: 'service:web:2', ServiceID: 'web', Type: 'grpc', ExposedPort: 21501, Output: '' },
        { CheckID: 'service:web:1', ServiceID: 'web', Type: 'http', ExposedPort: 21500, Output: 'HTTP GET http://:21500/health: 200 OK Output: ' },
        { CheckID: 'service:web:3', ServiceID: 'web', Type: 'tcp', ExposedPort: 0, Output: '' },
        { CheckID: 'service:web:4', ServiceID: 'web', Type: 'http', ExposedPort: 0, Output: 'HTTP GET http://127.0.0.1:8080/x: 200 OK Output: ' },
        { CheckID: 'service:api:1', ServiceID: 'api', Type: 'http', ExposedPort: 21502, Output: '' },
      ],
      'web',
    );
    assert.deepEqual(checks, [
      { checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' },
      { checkId: 'service:web:2', type: 'grpc', exposedPort: 21501, path: '/grpc.health.v1.Health/Check' },
    ]);
  });
});

describe('translate: exposed paths', () => {
  test('one plain listener per port on the public address, forwarding only its paths to the app', () => {
    const s = withExpose({ checks: true, paths: [path('Expose.Paths[0]', 21600, '/metrics', 9090)] }, [
      { checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' },
      { checkId: 'service:web:2', type: 'grpc', exposedPort: 21501, path: '/grpc.health.v1.Health/Check' },
      { checkId: 'service:web:3', type: 'http', exposedPort: 21502, path: undefined },
    ]);
    const { model, dropped } = translate(s, { runDir: RUN_DIR });
    assert.deepEqual(dropped, []);
    const exposed = model.frontends.filter((f) => f.exposedPaths !== undefined);
    assert.deepEqual(
      exposed.map((f) => [f.name, f.bind, f.tls, f.spoe, f.exposedPaths, f.defaultBackend]),
      [
        ['exposed_path_21500', { kind: 'inet', address: '0.0.0.0', port: 21500 }, undefined, undefined, ['/health'], 'exposed_cluster_8080'],
        ['exposed_path_21501', { kind: 'inet', address: '0.0.0.0', port: 21501 }, undefined, undefined, ['/grpc.health.v1.Health/Check'], 'exposed_cluster_8080_h2'],
        ['exposed_path_21600', { kind: 'inet', address: '0.0.0.0', port: 21600 }, undefined, undefined, ['/metrics'], 'exposed_cluster_9090'],
      ],
    );
    const backends = model.backends.filter((b) => b.name.startsWith('exposed_cluster_'));
    assert.deepEqual(
      backends.map((b) => [b.name, b.protoH2, b.tls, b.servers.map((srv) => `${srv.address}:${srv.port}`)]),
      [
        ['exposed_cluster_8080', false, undefined, ['127.0.0.1:8080']],
        ['exposed_cluster_8080_h2', true, undefined, ['127.0.0.1:8080']],
        ['exposed_cluster_9090', false, undefined, ['127.0.0.1:9090']],
      ],
    );
    haproxyAccepts(model);
  });

  test('checks are not served without Expose.Checks', () => {
    const s = withExpose({ checks: false, paths: [] }, [{ checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' }]);
    assert.equal(translate(s, { runDir: RUN_DIR }).model.frontends.filter((f) => f.exposedPaths !== undefined).length, 0);
  });

  test('the listener binds where the public listener does (bind_address, else the Address)', () => {
    const s = withExpose({ checks: false, paths: [path('Expose.Paths[0]', 21600, '/metrics')] }, [], snapshot({ listener: { bindAddress: '127.0.0.2' } }));
    const frontend = translate(s, { runDir: RUN_DIR }).model.frontends.find((f) => f.name === 'exposed_path_21600');
    assert.deepEqual(frontend?.bind, { kind: 'inet', address: '127.0.0.2', port: 21600 });
  });

  test('collisions: the exposed path is left out naming both sides; the rest applies', () => {
    const s = withExpose(
      {
        checks: false,
        paths: [
          path('Expose.Paths[0]', 21000, '/public'), // the public listener's port
          path('Expose.Paths[1]', 9191, '/upstream'), // an upstream's port (0.0.0.0 overlaps 127.0.0.1)
          path('Expose.Paths[2]', 9102, '/stats'), // -stats-addr
          path('Expose.Paths[3]', 21600, '/metrics'),
          path('Expose.Paths[4]', 21600, '/other', 9999), // same port, another target
          path('Expose.Paths[5]', 21600, '/debug'), // same port, same target: served together
          path('Expose.Paths[6]', 21601, '/ok'),
        ],
        refused: [{ item: 'Expose.Paths[7]', reason: "Expose.Paths[7] Path 'x' is not absolute (it must start with /); it is left out" }],
      },
      [],
      snapshot({ upstreams: [upstream('api', { localBindPort: 9191 })] }),
    );
    const { model, dropped } = translate(s, { runDir: RUN_DIR, reservedListeners: [{ conflict: 'overlaps -stats-addr 127.0.0.1:9102', address: '127.0.0.1', port: 9102 }] });
    const reasons = new Map(dropped.map((d) => [d.item, d.reason]));
    assert.ok(dropped.every((d) => d.kind === 'expose'));
    assert.match(reasons.get('Expose.Paths[0]') ?? '', /0\.0\.0\.0:21000 overlaps the listener of frontend 'public_listener'/);
    assert.match(reasons.get('Expose.Paths[1]') ?? '', /0\.0\.0\.0:9191 overlaps the listener of frontend '/);
    assert.match(reasons.get('Expose.Paths[2]') ?? '', /overlaps -stats-addr 127\.0\.0\.1:9102/);
    assert.match(
      reasons.get('Expose.Paths[4]') ?? '',
      /Expose\.Paths\[4\] \(path '\/other' to app port 9999 over http\) and Expose\.Paths\[3\] \(app port 8080 over http\) both listen on port 21600; Expose\.Paths\[4\] is left out/,
    );
    assert.match(reasons.get('Expose.Paths[7]') ?? '', /not absolute/);
    assert.equal(dropped.length, 5);
    const exposed = model.frontends.filter((f) => f.exposedPaths !== undefined);
    assert.deepEqual(
      exposed.map((f) => [f.name, f.exposedPaths]),
      [
        ['exposed_path_21600', ['/debug', '/metrics']],
        ['exposed_path_21601', ['/ok']],
      ],
    );
    haproxyAccepts(model);
  });

  test('hostile paths are quoted into one word each: haproxy -c accepts them and no line is injected', () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: an environment reference HAProxy would expand
    const hostile = ["/a'b", '/a"b', '/$HOME', '/${X}', '/a\\b', '/a}b', '/{', '/a||b', '/é', '/if', '/-m', '/%00'];
    const s = withExpose({ checks: false, paths: hostile.map((p, i) => path(`Expose.Paths[${i}]`, 21600, p)) });
    const { model, dropped } = translate(s, { runDir: RUN_DIR });
    assert.deepEqual(dropped, []);
    const text = render(model);
    const section = text.slice(text.indexOf('frontend exposed_path_21600'));
    const lines = section.slice(0, section.indexOf('\n\n')).split('\n');
    assert.equal(lines.filter((l) => l.startsWith('    acl exposed_path path -m str ')).length, hostile.length);
    assert.equal(lines.filter((l) => l === '    http-request return status 404 unless exposed_path').length, 1);
    // mode, bind, timeout client, timeout http-request, the two lines of no traffic log, the ACLs,
    // the 404 rule, default_backend: nothing else.
    assert.equal(lines.length, 1 + 6 + hostile.length + 2, lines.join('\n'));
    haproxyAccepts(model);
  });

  test('a hostile path that reaches translate unparsed is left out; one in a model is refused by validation, never written', () => {
    const evil = '/a\n    server evil 6.6.6.6:1';
    const s = withExpose({ checks: false, paths: [path('Expose.Paths[0]', 21600, evil), path('Expose.Paths[1]', 21601, '/ok')] });
    const { model, dropped } = translate(s, { runDir: RUN_DIR });
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]?.reason ?? '', /Expose\.Paths\[0\] path .* holds a space or a control character/);
    const ok = model.frontends.find((f) => f.name === 'exposed_path_21601');
    assert.ok(ok !== undefined);
    const forged = { ...model, frontends: model.frontends.map((f) => (f === ok ? { ...f, exposedPaths: [evil] } : f)) };
    assert.throws(() => render(forged), /exposed path .* holds a space or a control character/);
  });
});

describe('plan: exposed paths change through a reload that says why', () => {
  test('a path added, then removed', () => {
    const before = translate(snapshot(), { runDir: RUN_DIR }).model;
    const after1 = translate(withExpose({ checks: false, paths: [path('Expose.Paths[0]', 21600, '/metrics')] }), { runDir: RUN_DIR }).model;
    assert.deepEqual(plan(before, after1), { kind: 'reload', reasons: ['frontend exposed_path_21600 added', 'backend exposed_cluster_8080 added'] });
    const after2 = translate(withExpose({ checks: false, paths: [path('Expose.Paths[0]', 21600, '/metrics'), path('Expose.Paths[1]', 21600, '/x')] }), { runDir: RUN_DIR }).model;
    assert.deepEqual(plan(after1, after2), { kind: 'reload', reasons: ['frontend exposed_path_21600 changed'] });
    assert.deepEqual(plan(after2, before), { kind: 'reload', reasons: ['frontend exposed_path_21600 removed', 'backend exposed_cluster_8080 removed'] });
  });
});

describe('exposed ports another process holds (reconcile/exposed-ports.ts)', () => {
  test('only new exposed ports are tried; those that cannot be bound become reserved listeners naming the error', async () => {
    const s = withExpose({ checks: true, paths: [path('Expose.Paths[0]', 21600, '/metrics'), path('Expose.Paths[1]', 21601, '/x')] }, [
      { checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' },
    ]);
    const tried: string[] = [];
    const probe = async (address: string, port: number): Promise<string | undefined> => {
      tried.push(`${address}:${port}`);
      return port === 21601 ? 'EADDRINUSE' : undefined;
    };
    const applied = translate(withExpose({ checks: false, paths: [path('Expose.Paths[0]', 21600, '/metrics')] }), { runDir: RUN_DIR }).model;
    const reserved = await unbindableExposedPorts(s, applied, probe);
    assert.deepEqual(tried, ['0.0.0.0:21500', '0.0.0.0:21601']);
    assert.deepEqual(reserved, [{ conflict: 'cannot be bound (EADDRINUSE: another process holds it)', address: '0.0.0.0', port: 21601 }]);
    const { model, dropped } = translate(s, { runDir: RUN_DIR, reservedListeners: reserved });
    assert.deepEqual(dropped, [
      { kind: 'expose', item: 'Expose.Paths[1]', reason: 'Expose.Paths[1]: its listener 0.0.0.0:21601 cannot be bound (EADDRINUSE: another process holds it); it is left out' },
    ]);
    assert.deepEqual(
      model.frontends.filter((f) => f.exposedPaths !== undefined).map((f) => f.name),
      ['exposed_path_21500', 'exposed_path_21600'],
    );
    assert.deepEqual(await unbindableExposedPorts(snapshot(), undefined, probe), []);
  });

  test('the real probe: a held port is EADDRINUSE, a free one binds', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
    const port = (holder.address() as { port: number }).port;
    try {
      assert.equal(await probePort('127.0.0.1', port), 'EADDRINUSE');
      assert.equal(await probePort('0.0.0.0', port), 'EADDRINUSE');
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
    assert.equal(await probePort('127.0.0.1', port), undefined);
    assert.equal(await probePort('192.0.2.1', port), 'EADDRNOTAVAIL');
  });
});

/** Counts the polls of the exposed checks. */
class CountingConsul extends FakeConsulAgentApi {
  polls = 0;
  override async exposedChecks(serviceId: string, signal: AbortSignal): Promise<ExposedCheck[]> {
    this.polls++;
    return super.exposedChecks(serviceId, signal);
  }
}

describe('the exposed-checks watch (snapshot/watches.ts, fold.ts)', () => {
  test('runs while Expose.Checks is set, keeps a known path when the output names none, and stops (emitting none) when unset', async () => {
    const consul = new CountingConsul();
    const base = snapshot().registration;
    consul.setRegistration({ ...base, expose: { checks: true, paths: [] } });
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    consul.setExposedChecks('web', [{ checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' }]);
    const state = new SnapshotState('dc1');
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => state.apply(e), onError: () => {}, signal: root.signal, exposedChecksPollMs: 20 });
    try {
      watches.start();
      await waitFor('the exposed checks', async () => state.snapshot()?.exposedChecks, 5_000, 10);
      assert.ok(watches.running().includes('exposed-checks:web'));
      assert.deepEqual(state.snapshot()?.exposedChecks, [{ checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: '/health' }]);
      // The agent rewrote the output (no URL in it for a moment): the listener keeps its path.
      consul.setExposedChecks('web', [{ checkId: 'service:web:1', type: 'http', exposedPort: 21500, path: undefined }]);
      const before = consul.polls;
      await waitFor('two more polls', async () => (consul.polls >= before + 2 ? true : undefined), 5_000, 10);
      assert.equal(state.snapshot()?.exposedChecks?.[0]?.path, '/health');

      consul.setRegistration(base);
      await waitFor('the watch to stop', async () => (watches.running().includes('exposed-checks:web') ? undefined : true), 5_000, 10);
      await waitFor('no exposed checks', async () => (state.snapshot()?.exposedChecks === undefined ? true : undefined), 5_000, 10);
    } finally {
      root.abort();
      await watches.stopped();
    }
  });
});
