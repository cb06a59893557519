/** Planner table tests: which model changes reload, which become runtime ops, in which order. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RUNTIME_SERVER_ADDS, plan, pemCertificates, runtimeSubset, sameModelFiles } from '../../src/haproxy/plan.js';
import type { HaproxyModel } from '../../src/haproxy/model.js';
import { commandText, opCommands, pemPayload, type RuntimeOp } from '../../src/haproxy/runtime-ops.js';
import { serverSpec } from '../../src/haproxy/server-line.js';
import { translate } from '../../src/translate/translate.js';
import { chainFromCompiled } from '../../src/consul/discovery-chain.js';
import { discoveryChainSchema } from '../../src/consul/schemas.js';
import { upstreamFrontendName } from '../../src/domain/haproxy-names.js';
import { type Json, routedChainJson } from '../helpers/chains.js';
import { PEM, endpoint, roots, snapshot, upstream, webLeaf, ACTIVE_ROOT_ID, PREVIOUS_ROOT_ID, type SnapshotParts } from '../helpers/fixtures.js';

const RUN_DIR = '/run/hc';
const api = upstream('api', { protocol: 'http' });
const db = upstream('db', { localBindPort: 9192 });
const E1 = endpoint('node-1', '10.0.0.1');
const E2 = endpoint('node-2', '10.0.0.2');

function model(parts: SnapshotParts = {}): HaproxyModel {
  return translate(
    snapshot({
      upstreams: [api, db],
      endpoints: [
        [api.key, [E1, E2]],
        [db.key, [E1]],
      ],
      ...parts,
    }),
    { runDir: RUN_DIR },
  ).model;
}
function withApi(endpoints: ReturnType<typeof endpoint>[]): HaproxyModel {
  return model({
    endpoints: [
      [api.key, endpoints],
      [db.key, [E1]],
    ],
  });
}
const twoRoots = roots({
  roots: [
    { id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [], active: true },
    { id: PREVIOUS_ROOT_ID, rootCertPem: PEM.ca2, intermediateCertsPem: [], active: false },
  ],
});
const kinds = (ops: RuntimeOp[]): string[] => ops.map((op) => op.kind);

function runtimeOps(before: HaproxyModel, after: HaproxyModel): RuntimeOp[] {
  const p = plan(before, after);
  assert.equal(p.kind, 'runtime', JSON.stringify(p));
  return p.kind === 'runtime' ? p.ops : [];
}
function reloadReasons(before: HaproxyModel, after: HaproxyModel): string[] {
  const p = plan(before, after);
  assert.equal(p.kind, 'reload', JSON.stringify(p).slice(0, 300));
  return p.kind === 'reload' ? p.reasons : [];
}

describe('plan', () => {
  test('same model → none', () => assert.deepEqual(plan(model(), model()), { kind: 'none' }));

  const reloads: Array<[string, HaproxyModel, RegExp]> = [
    ['an upstream added', model({ upstreams: [api, db, upstream('c', { localBindPort: 9193 })] }), /frontend upstream_service_default_c_\w+ added/],
    ['an upstream removed', model({ upstreams: [api] }), /backend upstream_service_default_db_\w+_be removed/],
    ['an upstream protocol changed', model({ upstreams: [{ ...api, protocol: 'tcp' }, db] }), /backend upstream_service_default_api_\w+_be changed/],
    ['the public port changed', model({ listener: { bindPort: 21001 } }), /frontend public_listener changed/],
    [
      'global changed',
      translate(
        snapshot({
          upstreams: [api, db],
          endpoints: [
            [api.key, [E1, E2]],
            [db.key, [E1]],
          ],
        }),
        { runDir: RUN_DIR, maxconn: 99 },
      ).model,
      /global settings changed/,
    ],
    ['the crt-list changed (alpn)', model({ listener: { protocol: 'http' } }), /file public\.crtlist changed/],
    ['a root removed', model({ roots: roots() }), /CA roots changed \(0 added, 1 removed\)/],
    ['a root added', model({ roots: twoRoots }), /CA roots changed \(1 added, 0 removed\)/],
    ['an endpoint with a host name added', withApi([E1, E2, endpoint('node-3', 'api.example')]), /not resolvable at runtime/],
  ];
  for (const [name, after, reason] of reloads) {
    test(`reload: ${name}`, () => {
      const before = name === 'a root removed' ? model({ roots: twoRoots }) : model();
      assert.ok(
        reloadReasons(before, after).some((r) => reason.test(r)),
        `expected a reason matching ${reason}`,
      );
    });
  }

  test('endpoint added → add-server with the same spec as the file line', () => {
    const after = withApi([E1, E2, endpoint('node-3', '10.0.0.3')]);
    const ops = runtimeOps(model(), after);
    assert.deepEqual(kinds(ops), ['add-server']);
    const op = ops[0];
    assert.ok(op?.kind === 'add-server');
    const backend = after.backends.find((b) => b.name === op.backend);
    assert.ok(backend);
    assert.equal(op.spec, serverSpec(op.server, backend));
    assert.match(
      op.spec,
      /^node-3_api-sidecar-proxy_\w+ 10\.0\.0\.3:21000 weight 1 ssl verify required crt leaf\.pem ca-file roots\.pem ssl-min-ver TLSv1\.2 alpn http\/1\.1 pool-max-conn -1 pool-purge-delay 5s$/,
    );
  });

  test('endpoint removed, moved, reweighted → ordered adds, moves, weights, removals', () => {
    const after = withApi([endpoint('node-1', '10.0.0.9', 21001, 5), endpoint('node-4', '10.0.0.4')]);
    assert.deepEqual(kinds(runtimeOps(model(), after)), ['add-server', 'set-address', 'set-weight', 'remove-server']);
  });

  test('more servers to add than the runtime limit → reload', () => {
    const many = (n: number) => withApi(Array.from({ length: n }, (_, i) => endpoint(`node-${i}`, `10.1.${Math.floor(i / 250)}.${i % 250}`)));
    assert.equal(plan(withApi([]), many(MAX_RUNTIME_SERVER_ADDS)).kind, 'runtime');
    assert.deepEqual(reloadReasons(withApi([]), many(MAX_RUNTIME_SERVER_ADDS + 1)), [
      `${MAX_RUNTIME_SERVER_ADDS + 1} servers to add (more than ${MAX_RUNTIME_SERVER_ADDS}: a reload is faster than runtime adds)`,
    ]);
  });

  test('a backend going from 0 to N and N to 0 servers is runtime', () => {
    assert.deepEqual(kinds(runtimeOps(withApi([]), withApi([E1, E2]))), ['add-server', 'add-server']);
    assert.deepEqual(kinds(runtimeOps(withApi([E1, E2]), withApi([]))), ['remove-server', 'remove-server']);
  });

  test('leaf rotation → set-leaf with the absolute path', () => {
    const ops = runtimeOps(model(), model({ leaf: webLeaf({ certPem: PEM.apiCert, privateKeyPem: PEM.apiKey }) }));
    assert.deepEqual(
      ops.map((op) => op.kind === 'set-leaf' && op.path),
      [`${RUN_DIR}/leaf.pem`],
    );
  });

  test('roots appended together with a leaf change and an endpoint → one reload that carries all', () => {
    const after = model({
      roots: twoRoots,
      leaf: webLeaf({ certPem: PEM.apiCert, privateKeyPem: PEM.apiKey }),
      endpoints: [
        [api.key, [E1]],
        [db.key, [E1]],
      ],
    });
    assert.deepEqual(reloadReasons(model(), after), ['CA roots changed (1 added, 0 removed)']);
  });

  test('intentions changed → a runtime epoch update; turning enforcement on → reload', () => {
    const allowAll = { intentions: [], defaultAllow: true };
    const denyAll = { intentions: [], defaultAllow: false };
    const ops = runtimeOps(model({ intentions: allowAll }), model({ intentions: denyAll }));
    assert.equal(ops.length, 1);
    const [op] = ops;
    assert.ok(op?.kind === 'set-intentions-epoch');
    assert.equal(op.path, `${RUN_DIR}/intentions-epoch.map`);
    assert.deepEqual(
      opCommands(op).map((c) => c.line),
      [`add map ${RUN_DIR}/intentions-epoch.map ${op.epoch} 1`, `set map ${RUN_DIR}/intentions-epoch.map current ${op.epoch}`, `del map ${RUN_DIR}/intentions-epoch.map ${op.previous[0]}`],
    );
    assert.deepEqual(plan(model({ intentions: allowAll }), model({ intentions: { ...allowAll } })), { kind: 'none' });
    assert.ok(reloadReasons(model(), model({ intentions: allowAll })).includes('frontend public_listener changed'));
  });

  test('split weights changed → set map of the changed cut points; a route change → one reload naming the frontend', () => {
    const routed = (weights: [number, number], routes?: Json[]): HaproxyModel => {
      const splits = [
        { Weight: weights[0], NextNode: 'resolver:v1.api.default.default.dc1' },
        { Weight: weights[1], NextNode: 'resolver:v2.api.default.default.dc1' },
      ];
      const chain = chainFromCompiled(api.key, discoveryChainSchema.parse(routedChainJson({ splits, ...(routes !== undefined && { routes }) })).Chain, 'dc1');
      const base = snapshot({ upstreams: [api] });
      return translate({ ...base, chains: new Map([[api.key, chain]]) }, { runDir: RUN_DIR }).model;
    };
    const ops = runtimeOps(routed([90, 10]), routed([25, 75]));
    assert.deepEqual(ops, [{ kind: 'set-split-weights', path: `${RUN_DIR}/route-splits.map`, entries: [[`${upstreamFrontendName(api.key)}/2/0`, 2_500]] }]);
    assert.deepEqual(
      opCommands(ops[0] as RuntimeOp).map((c) => c.line),
      [`set map ${RUN_DIR}/route-splits.map ${upstreamFrontendName(api.key)}/2/0 2500`],
    );
    assert.deepEqual(plan(routed([90, 10]), routed([90, 10])), { kind: 'none' });
    const fewer = [{ Definition: { Match: { HTTP: { PathPrefix: '/' } } }, NextNode: 'splitter:api.default.default' }];
    const reasons = reloadReasons(routed([90, 10]), routed([90, 10], fewer));
    assert.ok(reasons.includes(`frontend ${upstreamFrontendName(api.key)} changed`), reasons.join('; '));
  });

  test('reformatting the roots bundle is not a removal', () => {
    assert.deepEqual(pemCertificates(`${PEM.ca}\n\n${PEM.ca2}`), pemCertificates(`${PEM.ca.replace(/\n/g, '\r\n')}${PEM.ca2}`));
  });
});

describe('runtime-ops commands', () => {
  const server = { name: 's1', address: '10.0.0.1', port: 21000, weight: 2 };
  test('exact command lines', () => {
    const lines = (op: RuntimeOp): string[] => opCommands(op).map((c) => c.line);
    assert.deepEqual(lines({ kind: 'add-server', backend: 'b', server, spec: 's1 10.0.0.1:21000 weight 2' }), ['add server b/s1 10.0.0.1:21000 weight 2', 'enable server b/s1']);
    assert.deepEqual(lines({ kind: 'remove-server', backend: 'b', server: 's1' }), ['disable server b/s1', 'del server b/s1']);
    assert.deepEqual(lines({ kind: 'set-weight', backend: 'b', server: 's1', weight: 7 }), ['set weight b/s1 7']);
    assert.deepEqual(lines({ kind: 'set-address', backend: 'b', server: 's1', address: '::1', port: 80 }), ['disable server b/s1', 'set server b/s1 addr ::1 port 80', 'enable server b/s1']);
    assert.deepEqual(lines({ kind: 'set-leaf', path: '/r/leaf.pem', pem: PEM.webCert }), ['set ssl cert /r/leaf.pem', 'commit ssl cert /r/leaf.pem']);
  });

  test('payload: no empty line inside, ended by one', () => {
    const [set] = opCommands({ kind: 'set-leaf', path: '/r/leaf.pem', pem: `${PEM.webCert}\n\n${PEM.webKey}` });
    assert.ok(set);
    const text = commandText(set);
    assert.ok(text.startsWith('set ssl cert /r/leaf.pem <<\n-----BEGIN CERTIFICATE-----\n'));
    assert.ok(text.endsWith('-----END PRIVATE KEY-----\n\n') || text.endsWith('-----END EC PRIVATE KEY-----\n\n'));
    assert.equal(text.slice(0, -2).includes('\n\n'), false);
  });

  test('refuses enabled on add server, unsafe names, oversized payloads', () => {
    assert.throws(() => opCommands({ kind: 'add-server', backend: 'b', server, spec: 's1 10.0.0.1:21000 weight 2 enabled' }), /enabled/);
    assert.throws(() => opCommands({ kind: 'set-weight', backend: 'b x', server: 's1', weight: 1 }), /must match/);
    assert.throws(() => opCommands({ kind: 'set-leaf', path: 'leaf.pem', pem: PEM.webCert }), /absolute/);
    assert.throws(() => pemPayload('x'.repeat(20_000)), /exceeds/);
  });
});

describe('runtimeSubset: what goes live when a reload cannot', () => {
  const cache = upstream('cache', { localBindPort: 9300 });
  test('servers of unchanged backends and the leaf follow desired; a new upstream and new roots wait', () => {
    const applied = withApi([E1]);
    const newLeaf = webLeaf({ certPem: PEM.apiCert, privateKeyPem: PEM.apiKey, serialNumber: 'ff' });
    const desired = model({
      upstreams: [api, db, cache],
      endpoints: [
        [api.key, [E1, E2]],
        [db.key, [E1]],
        [cache.key, [E1]],
      ],
      leaf: newLeaf,
      roots: twoRoots,
    });
    assert.equal(plan(applied, desired).kind, 'reload');
    const partial = runtimeSubset(applied, desired);
    assert.deepEqual(
      partial.frontends.map((f) => f.name),
      applied.frontends.map((f) => f.name),
    );
    assert.deepEqual(
      partial.files.find((f) => f.name === 'roots.pem'),
      applied.files.find((f) => f.name === 'roots.pem'),
    );
    const decision = plan(applied, partial);
    assert.equal(decision.kind, 'runtime');
    if (decision.kind !== 'runtime') return;
    assert.deepEqual(kinds(decision.ops), ['set-leaf', 'add-server']);
    // From the partial state, the rest is a reload (retried later).
    assert.equal(plan(partial, desired).kind, 'reload');
  });

  test('a server whose new address is a host name keeps its applied state', () => {
    const applied = withApi([E1]);
    const desired = withApi([{ ...E1, address: 'api.internal' }, E2]);
    const partial = runtimeSubset(applied, desired);
    const servers = partial.backends.find((b) => b.servers.some((s) => s.address === '10.0.0.2'))?.servers ?? [];
    assert.deepEqual(
      servers.map((s) => s.address),
      ['10.0.0.1', '10.0.0.2'],
    );
    assert.equal(plan(applied, partial).kind, 'runtime');
  });
});

describe('sameModelFiles', () => {
  test('same names, bytes and modes; any difference counts', () => {
    const a = withApi([E1]);
    assert.equal(sameModelFiles(a, withApi([E1, E2])), true, 'servers are not files');
    assert.equal(sameModelFiles(a, model({ leaf: webLeaf({ certPem: PEM.apiCert, privateKeyPem: PEM.apiKey }) })), false);
    assert.equal(sameModelFiles(a, { ...a, files: a.files.map((f) => ({ ...f, mode: 0o640 })) }), false);
    assert.equal(sameModelFiles(a, { ...a, files: a.files.slice(1) }), false);
  });
});
