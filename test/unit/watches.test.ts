import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitFor } from '../../devtools/ports.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import type { SnapshotEvent } from '../../src/snapshot/fold.js';
import type { ProxyRegistration, Target } from '../../src/domain/snapshot.js';
import { MESH_WATCH, SidecarWatches, type WatchErrorReport } from '../../src/snapshot/watches.js';
import { HaproxyConnectError } from '../../src/errors.js';
import { endpoint, roots, snapshot, upstream, webLeaf } from '../helpers/fixtures.js';

function registration(...names: string[]): ProxyRegistration {
  return snapshot({ upstreams: names.map((n, i) => upstream(n, { localBindPort: 9000 + i })) }).registration as ProxyRegistration;
}

describe('SidecarWatches', () => {
  test('an emit that throws is reported as a consumer error; the watches go on', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration());
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const reports: Array<{ watch: string; kind: string; attempt: number; message: string }> = [];
    const events: SnapshotEvent[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({
      api: consul,
      proxyId: 'web-sidecar-proxy',
      datacenter: 'dc1',
      signal: root.signal,
      emit: (e) => {
        if (e.kind === 'roots' && !events.some((x) => x.kind === 'roots')) {
          events.push(e);
          throw new Error('fold bug');
        }
        events.push(e);
      },
      onError: (r) => reports.push({ watch: r.watch, kind: r.kind, attempt: r.attempt, message: r.error.message }),
    });
    watches.start();
    await waitFor('the first roots', async () => (events.some((e) => e.kind === 'roots') ? true : undefined), 5_000, 10);
    assert.deepEqual(reports, [{ watch: 'roots', kind: 'consumer', attempt: 0, message: 'fold bug' }]);
    consul.setRoots(roots({ trustDomain: 'other.consul' }));
    await waitFor('the next roots', async () => (events.filter((e) => e.kind === 'roots').length === 2 ? true : undefined), 5_000, 10);
    assert.ok(watches.running().includes('roots'));
    root.abort();
    await watches.stopped();
  });

  test('many upstreams: no MaxListenersExceededWarning on the root signal, and its abort stops every watch', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `svc${i}`);
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration(...names));
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'MaxListenersExceededWarning') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: () => {}, onError: () => {}, signal: root.signal });
    try {
      watches.start();
      await waitFor('every upstream watch', async () => (watches.running().length === 3 + 2 * names.length ? true : undefined), 5_000, 10);
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
      root.abort();
    }
    await watches.stopped();
  });

  test('upstream watches start and stop as the registration changes', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration('api', 'db'));
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    consul.setEndpoints({ destinationName: 'api', destinationNamespace: 'default', datacenter: '' }, [endpoint('n1', '10.0.0.1')]);
    const events: SnapshotEvent[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => events.push(e), onError: () => {}, signal: root.signal });
    watches.start();
    await waitFor('upstream watches', async () => (watches.running().length === 7 ? true : undefined), 5_000, 10);
    assert.deepEqual(watches.running(), [
      'chain:service:default/api@',
      'chain:service:default/db@',
      'leaf:web',
      'registration:web-sidecar-proxy',
      'roots',
      'target:api.default.default.dc1',
      'target:db.default.default.dc1',
    ]);
    await waitFor('api endpoints', async () => events.find((e) => e.kind === 'target-endpoints' && e.targetId === 'api.default.default.dc1'), 5_000, 10);

    consul.setRegistration(registration('api', 'cache'));
    await waitFor(
      'db replaced by cache',
      async () => (watches.running().includes('target:cache.default.default.dc1') && !watches.running().includes('target:db.default.default.dc1') ? true : undefined),
      5_000,
      10,
    );
    assert.ok(events.some((e) => e.kind === 'target-removed' && e.targetId === 'db.default.default.dc1'));
    assert.ok(!watches.running().includes('chain:service:default/db@'), 'the chain watch of a removed upstream stops');
    assert.ok(watches.running().includes('chain:service:default/cache@'));
    const apiWatchStarts = consul.calls.filter((c) => c.method === 'upstreamEndpoints' && c.arg.includes('api') && c.cursor?.index === undefined).length;
    assert.equal(apiWatchStarts, 1, 'a watch that runs is not started again');

    root.abort();
    await watches.stopped();
  });

  test('two upstreams that reach the same target share one watch; another datacenter is its own target', async () => {
    const consul = new FakeConsulAgentApi();
    const s = snapshot({
      upstreams: [upstream('api', { localBindPort: 9000 }), upstream('api', { localBindPort: 9001, datacenter: 'dc1' }), upstream('api', { localBindPort: 9002, datacenter: 'dc2' })],
    });
    consul.setRegistration(s.registration as ProxyRegistration);
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: () => {}, onError: () => {}, signal: root.signal });
    watches.start();
    await waitFor('target watches', async () => (watches.running().length === 8 ? true : undefined), 5_000, 10);
    assert.deepEqual(
      watches.running().filter((w) => w.startsWith('target:')),
      ['target:api.default.default.dc1', 'target:api.default.default.dc2'],
    );
    // The local datacenter is asked without naming it, another one by name.
    const asked = consul.calls.filter((c) => c.method === 'upstreamEndpoints').map((c) => c.arg);
    assert.equal(new Set(asked).size, 2, JSON.stringify(asked));
    root.abort();
    await watches.stopped();
  });

  test('the chain decides the targets: a subset target is watched with its filter, a failover target too; a new filter restarts that watch', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration('api'));
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const target = (id: string, service: string, filter: string): Target => ({
      id,
      kind: 'service',
      service,
      namespace: 'default',
      partition: 'default',
      datacenter: 'dc1',
      filter,
      onlyPassing: false,
    });
    consul.setChain('api', '', { targets: [target('v2.api.default.default.dc1', 'api', 'Service.Meta.version == v2'), target('backup.default.default.dc1', 'backup', '')] });
    const events: SnapshotEvent[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => events.push(e), onError: () => {}, signal: root.signal });
    watches.start();
    await waitFor('chain targets', async () => (watches.running().includes('target:backup.default.default.dc1') ? true : undefined), 5_000, 10);
    assert.deepEqual(
      watches.running().filter((w) => w.startsWith('target:')),
      ['target:backup.default.default.dc1', 'target:v2.api.default.default.dc1'],
    );
    const chainEvent = events.find((e) => e.kind === 'chain');
    assert.equal(chainEvent?.kind === 'chain' ? chainEvent.upstreamKey : undefined, 'service:default/api@');
    const filtered = (): number => consul.calls.filter((c) => c.method === 'upstreamEndpoints' && c.arg === 'default/api@' && c.cursor?.index === undefined).length;
    assert.equal(filtered(), 1);
    // The same subset with another filter: that target's watch restarts; the failover target's is left alone.
    consul.setChain('api', '', { targets: [target('v2.api.default.default.dc1', 'api', 'Service.Meta.version == "2"'), target('backup.default.default.dc1', 'backup', '')] });
    await waitFor('restarted target watch', async () => (filtered() === 2 ? true : undefined), 5_000, 10);
    assert.equal(consul.calls.filter((c) => c.method === 'upstreamEndpoints' && c.arg === 'default/backup@' && c.cursor?.index === undefined).length, 1);
    // No failover any more: its watch stops and its endpoints are dropped.
    consul.setChain('api', '', { targets: [target('v2.api.default.default.dc1', 'api', 'Service.Meta.version == "2"')] });
    await waitFor('failover watch stopped', async () => (!watches.running().includes('target:backup.default.default.dc1') ? true : undefined), 5_000, 10);
    assert.ok(events.some((e) => e.kind === 'target-removed' && e.targetId === 'backup.default.default.dc1'));
    root.abort();
    await watches.stopped();
  });

  test('a chain that fails is reported with its upstream; the other upstreams get their chains and targets', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration('api', 'db'));
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    consul.failNext(3, new HaproxyConnectError('CONSUL_HTTP', 'discovery chain "api" uses inconsistent protocols'), 'discoveryChain');
    const reports: WatchErrorReport[] = [];
    const events: SnapshotEvent[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => events.push(e), onError: (r) => reports.push(r), signal: root.signal });
    watches.start();
    await waitFor('both chains in the end', async () => (events.filter((e) => e.kind === 'chain').length === 2 ? true : undefined), 10_000, 10);
    assert.ok(reports.length > 0);
    for (const r of reports) {
      assert.match(r.watch, /^chain:service:default\/(api|db)@$/);
      assert.deepEqual(r.upstreams, [r.watch.slice('chain:'.length)]);
    }
    root.abort();
    await watches.stopped();
  });

  test('the mesh config entry is watched while the public listener speaks HTTP: absent, written, malformed or refused (the last good value stands), deleted, then not watched for TCP', async () => {
    const consul = new FakeConsulAgentApi();
    const http = (protocol: 'http' | 'http2' | 'grpc' | 'tcp'): ProxyRegistration => snapshot({ listener: { protocol } }).registration as ProxyRegistration;
    consul.setRegistration(http('http'));
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const events: SnapshotEvent[] = [];
    const reports: WatchErrorReport[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => events.push(e), onError: (r) => reports.push(r), signal: root.signal });
    watches.start();
    const meshEvents = (): boolean[] => events.flatMap((e) => (e.kind === 'mesh' ? [e.value.sanitizeXForwardedClientCert] : []));
    await waitFor('the defaults (no entry)', async () => (meshEvents().length === 1 ? true : undefined), 5_000, 10);
    assert.deepEqual(meshEvents(), [false]);
    assert.ok(watches.running().includes(MESH_WATCH));

    consul.setMeshConfig({ sanitizeXForwardedClientCert: true });
    await waitFor('the entry', async () => (meshEvents().length === 2 ? true : undefined), 5_000, 10);
    assert.deepEqual(meshEvents(), [false, true]);

    // A malformed entry and a refused token fail the request: reported, retried, nothing emitted.
    consul.failNext(1, new HaproxyConnectError('CONSUL_RESPONSE_INVALID', 'HTTP.SanitizeXForwardedClientCert "yes", expected true or false'), 'meshConfig');
    consul.failNext(1, new HaproxyConnectError('CONSUL_FORBIDDEN', 'rejected the ACL token (403): ACL not found'), 'meshConfig');
    consul.expireBlockingQueries();
    await waitFor('both failures reported', async () => (reports.filter((r) => r.watch === MESH_WATCH).length === 2 ? true : undefined), 10_000, 10);
    assert.deepEqual(
      reports.map((r) => [r.watch, r.kind, (r.error as HaproxyConnectError).code]),
      [
        [MESH_WATCH, 'fetch', 'CONSUL_RESPONSE_INVALID'],
        [MESH_WATCH, 'fetch', 'CONSUL_FORBIDDEN'],
      ],
    );
    consul.setMeshConfig(undefined);
    await waitFor('the delete', async () => (meshEvents().length === 3 ? true : undefined), 10_000, 10);
    assert.deepEqual(meshEvents(), [false, true, false], 'the failures emitted nothing; the delete is the defaults');

    consul.setRegistration(http('tcp'));
    await waitFor('the mesh watch stops for TCP', async () => (!watches.running().includes(MESH_WATCH) ? true : undefined), 5_000, 10);
    consul.setRegistration(http('grpc'));
    await waitFor('gRPC', async () => (events.filter((e) => e.kind === 'registration').length === 3 ? true : undefined), 5_000, 10);
    assert.ok(!watches.running().includes(MESH_WATCH), 'gRPC listeners never forward XFCC');
    consul.setRegistration(http('http2'));
    await waitFor('the mesh watch again for HTTP/2', async () => (watches.running().includes(MESH_WATCH) ? true : undefined), 5_000, 10);
    root.abort();
    await watches.stopped();
  });

  test('with intentions enforced, the intentions of the service are watched next to its leaf', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(registration());
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const events: SnapshotEvent[] = [];
    const root = new AbortController();
    const watches = new SidecarWatches({ api: consul, proxyId: 'web-sidecar-proxy', datacenter: 'dc1', emit: (e) => events.push(e), onError: () => {}, signal: root.signal, watchIntentions: true });
    watches.start();
    await waitFor('intentions watch', async () => (watches.running().includes('intentions:web') ? true : undefined), 5_000, 10);
    await waitFor('the default answer', async () => events.find((e) => e.kind === 'intentions'), 5_000, 10);
    consul.setIntentions({ name: 'web', namespace: 'default' }, { intentions: [], defaultAllow: false });
    await waitFor('the change', async () => events.find((e) => e.kind === 'intentions' && !e.value.defaultAllow), 5_000, 10);
    root.abort();
    await watches.stopped();
  });
});
