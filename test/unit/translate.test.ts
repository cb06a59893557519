/**
 * Golden tests of translate + render, each config also checked by the real `haproxy -c`
 * (binary from HAPROXY_BIN, else `haproxy`). `UPDATE_GOLDEN=1` rewrites the golden files.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { translate, type TranslateOptions } from '../../src/translate/translate.js';
import { render } from '../../src/haproxy/render.js';
import type { HaproxyModel } from '../../src/haproxy/model.js';
import type { IntentionSet } from '../../src/domain/intentions.js';
import { SPOE_CONFIG_FILE } from '../../src/domain/haproxy-names.js';
import { defaultAccessLogFormat, parseJsonFormat } from '../../src/domain/access-log-template.js';
import type { CaRoot, Chain, Endpoint, Snapshot, Target } from '../../src/domain/snapshot.js';
import { isValidAddress } from '../../src/haproxy/validate.js';
import { upstreamFrontendName } from '../../src/domain/haproxy-names.js';
import fc from 'fast-check';
import { chainFromCompiled } from '../../src/consul/discovery-chain.js';
import { discoveryChainSchema } from '../../src/consul/schemas.js';
import { routedChainJson } from '../helpers/chains.js';
import { ACTIVE_ROOT_ID, PEM, PREVIOUS_ROOT_ID, endpoint, roots, snapshot, upstream } from '../helpers/fixtures.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const GOLDEN_DIR = fileURLToPath(new URL('../golden/', import.meta.url));
const GOLDEN_RUN_DIR = '/run/haproxy-connect';
const UPDATE_GOLDEN = process.env['UPDATE_GOLDEN'] === '1';
const HAPROXY_CHECK_TIMEOUT_MS = 20_000;

interface Case {
  name: string;
  snapshot: Snapshot;
  options?: Omit<TranslateOptions, 'runDir'>;
}

const api = upstream('api', { localBindPort: 9191 });

function chainTarget(id: string, service: string, extra: Partial<Target> = {}): Target {
  return { id, kind: 'service', service, namespace: 'default', partition: 'default', datacenter: 'dc1', filter: '', onlyPassing: false, ...extra };
}

/** The snapshot with these chains and these endpoints per target (as the chain and target watches would fold them). */
function withChains(base: Snapshot, chains: Array<[string, Chain]>, targets: Array<[string, Endpoint[]]>): Snapshot {
  return { ...base, chains: new Map([...base.chains, ...chains]), targets: new Map([...base.targets, ...targets]) };
}
const INTENTIONS: IntentionSet = {
  defaultAllow: false,
  intentions: [
    {
      sourceName: 'web',
      sourceNamespace: 'default',
      sourcePartition: 'default',
      sourcePeer: '',
      destinationName: 'web',
      destinationNamespace: 'default',
      destinationPartition: 'default',
      action: 'allow',
      permissions: [],
      precedence: 9,
    },
  ],
};
const db = upstream('db', { localBindPort: 9192 });

const CASES: Case[] = [
  { name: 'tcp-no-upstreams', snapshot: snapshot() },
  { name: 'http', snapshot: snapshot({ listener: { protocol: 'http' } }) },
  { name: 'http2', snapshot: snapshot({ listener: { protocol: 'http2' } }) },
  { name: 'grpc', snapshot: snapshot({ listener: { protocol: 'grpc', localServicePort: 50051 } }) },
  {
    name: 'tcp-two-upstreams',
    snapshot: snapshot({
      // Given out of order on purpose: the output is sorted.
      upstreams: [db, api],
      endpoints: [
        [api.key, [endpoint('node-2', '10.0.0.2'), endpoint('node-1', '10.0.0.1')]],
        [db.key, [endpoint('node-3', '10.0.0.3', 21000, 1, 'db-sidecar-proxy')]],
      ],
    }),
  },
  { name: 'upstream-no-endpoints', snapshot: snapshot({ upstreams: [api] }) },
  {
    name: 'unix-socket-upstream',
    snapshot: snapshot({
      upstreams: [upstream('db', { localBindSocketPath: '/run/app/db.sock', localBindSocketMode: 0o660 })],
      endpoints: [[upstream('db').key, [endpoint('node-3', '10.0.0.3')]]],
    }),
  },
  {
    name: 'custom-bind',
    snapshot: snapshot({ listener: { bindAddress: '192.0.2.10', bindPort: 20000, localServiceAddress: '127.0.0.2', localServicePort: 3000 } }),
    options: { nbthread: 2, maxconn: 2000, hardStopAfterMs: 90_000 },
  },
  {
    name: 'ipv6',
    snapshot: snapshot({
      listener: { bindAddress: '::', bindPort: 21000, localServiceAddress: '::1' },
      upstreams: [upstream('api', { localBindAddress: '::1' })],
      endpoints: [[api.key, [endpoint('node-6', '2001:db8::6')]]],
    }),
  },
  {
    name: 'custom-timeouts',
    snapshot: snapshot({
      listener: { protocol: 'http', localConnectTimeoutMs: 2500, localRequestTimeoutMs: 30_000 },
      upstreams: [upstream('api', { protocol: 'http', connectTimeoutMs: 1500 })],
      endpoints: [[api.key, [endpoint('node-1', '10.0.0.1')]]],
    }),
  },
  {
    name: 'request-timeout-disabled',
    snapshot: snapshot({ listener: { protocol: 'http', localRequestTimeoutMs: 0 } }),
  },
  {
    name: 'other-datacenter',
    snapshot: snapshot({
      upstreams: [upstream('api', { datacenter: 'dc2' })],
      endpoints: [[upstream('api', { datacenter: 'dc2' }).key, [endpoint('dc2-node-1', '10.1.0.1')]]],
    }),
  },
  {
    // A resolver's chain: an HTTP upstream to subset v2 (OnlyPassing) failing over to api-backup,
    // ring_hash on a header then the source; a TCP upstream with least_request and a 1.5 s timeout.
    name: 'discovery-chain',
    snapshot: withChains(
      snapshot({
        upstreams: [upstream('api', { protocol: 'http', localBindPort: 9191 }), upstream('db', { protocol: 'tcp', localBindPort: 9192 })],
      }),
      [
        [
          upstream('api').key,
          {
            targets: [
              chainTarget('v2.api.default.default.dc1', 'api', { filter: 'Service.Meta.version == v2', onlyPassing: true, connectTimeoutMs: 3_000 }),
              chainTarget('api-backup.default.default.dc1', 'api-backup'),
            ],
            loadBalancer: {
              policy: 'ring_hash',
              choiceCount: 2,
              hashPolicies: [
                { source: { kind: 'header', name: 'x-user' }, terminal: false },
                { source: { kind: 'source_ip' }, terminal: true },
              ],
            },
          },
        ],
        [upstream('db').key, { targets: [chainTarget('db.default.default.dc1', 'db', { connectTimeoutMs: 1_500 })], loadBalancer: { policy: 'least_request', choiceCount: 3, hashPolicies: [] } }],
      ],
      [
        ['v2.api.default.default.dc1', [endpoint('node-1', '10.0.0.1'), { ...endpoint('node-2', '10.0.0.2'), status: 'warning' }, { ...endpoint('node-3', '10.0.0.3'), status: 'critical' }]],
        ['api-backup.default.default.dc1', [endpoint('node-4', '10.0.0.4', 21000, 1, 'api-backup-sidecar-proxy')]],
        [
          'db.default.default.dc1',
          [endpoint('node-5', '10.0.0.5', 21000, 2, 'db-sidecar-proxy'), { ...endpoint('node-6', '10.0.0.6', 21000, 5, 'db-sidecar-proxy'), status: 'warning', warningWeight: 1 }],
        ],
      ],
    ),
  },
  {
    // service-router → service-splitter → resolvers (L7.md §1.3): routes, split cut points in a map,
    // a backend per (target, retry policy), header changes, a prefix rewrite.
    name: 'http-routing',
    snapshot: withChains(
      snapshot({ upstreams: [upstream('api', { protocol: 'http', localBindPort: 9191 })] }),
      [[upstream('api').key, chainFromCompiled(upstream('api').key, discoveryChainSchema.parse(routedChainJson()).Chain, 'dc1')]],
      [
        ['v1.api.default.default.dc1', [endpoint('node-1', '10.0.0.1')]],
        ['v2.api.default.default.dc1', [endpoint('node-2', '10.0.0.2')]],
        ['api-v2.default.default.dc1', [endpoint('node-3', '10.0.0.3', 21000, 1, 'api-v2-sidecar-proxy')]],
        ['api-backup.default.default.dc1', [endpoint('node-4', '10.0.0.4', 21000, 1, 'api-backup-sidecar-proxy')]],
      ],
    ),
  },
  {
    name: 'weights',
    snapshot: snapshot({
      upstreams: [api],
      endpoints: [
        [
          api.key,
          [
            endpoint('node-1', '10.0.0.1', 21000, 1),
            endpoint('node-2', '10.0.0.2', 21000, 10),
            endpoint('node-3', '10.0.0.3', 21000, 300),
            endpoint('node-4', '10.0.0.4', 21000, 65535),
            endpoint('node-5', '10.0.0.5', 21000, 0),
          ],
        ],
      ],
    }),
  },
  {
    name: 'mixed-protocols',
    snapshot: snapshot({
      listener: { protocol: 'http2' },
      upstreams: [upstream('api', { protocol: 'http', localBindPort: 9191 }), upstream('billing', { protocol: 'grpc', localBindPort: 9192 }), upstream('db', { protocol: 'tcp', localBindPort: 9193 })],
      endpoints: [
        [upstream('api').key, [endpoint('node-1', '10.0.0.1')]],
        [upstream('billing').key, [endpoint('node-2', '10.0.0.2', 21000, 1, 'billing-sidecar-proxy')]],
        [upstream('db').key, [endpoint('node-3', '10.0.0.3', 21000, 1, 'db-sidecar-proxy')]],
      ],
    }),
  },
  {
    // Bad data from Consul about some items: each is left out, the rest is served (and checked by haproxy -c).
    name: 'dropped-items',
    snapshot: snapshot({
      upstreams: [api, db, upstream('cache', { localBindPort: 21000, localBindAddress: '0.0.0.0' })],
      endpoints: [
        [
          api.key,
          [
            endpoint('node-1', '10.0.0.1'),
            endpoint('node-2', 'bad host#1'),
            endpoint('node-3', '10.0.0.3', 0),
            endpoint('node-4', '10.0.0.4', 70000),
            endpoint('node-5', '10.0.0.5\n    server evil 6.6.6.6:1'),
            { ...endpoint('node-6', ''), invalid: 'unexpected instance in the answer: Service.Port: expected number, received string' },
          ],
        ],
        [db.key, [endpoint('node-7', '10.0.0.7', 21000, 1, 'db-sidecar-proxy')]],
      ],
      roots: roots({ roots: [...roots().roots, { id: 'garbage', rootCertPem: '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n', intermediateCertsPem: [], active: false }] }),
    }),
  },
  {
    // Circuit breaker and outlier ejection on an HTTP and a TCP upstream (README "Upstream limits and passive health").
    name: 'upstream-limits',
    snapshot: snapshot({
      upstreams: [
        upstream('api', {
          localBindPort: 9191,
          protocol: 'http',
          limits: { maxConnections: 3, maxPendingRequests: 4, maxConcurrentRequests: 2 },
          passiveHealthCheck: { intervalMs: 1_000, maxFailures: 3, enforcingConsecutive5xx: 100, maxEjectionPercent: 10, baseEjectionTimeMs: 2_500 },
        }),
        upstream('db', {
          localBindPort: 9192,
          limits: { maxConnections: 3, maxPendingRequests: 1024, maxConcurrentRequests: 1024 },
          passiveHealthCheck: { intervalMs: 10_000, maxFailures: 5, enforcingConsecutive5xx: 100, maxEjectionPercent: 10, baseEjectionTimeMs: 30_000 },
        }),
      ],
      endpoints: [
        ['service:default/api@', [endpoint('node-1', '10.0.0.1'), endpoint('node-2', '10.0.0.2')]],
        ['service:default/db@', [endpoint('node-1', '10.0.0.3', 21000, 1, 'db-sidecar-proxy')]],
      ],
    }),
  },
  { name: 'intentions-tcp', snapshot: snapshot({ intentions: INTENTIONS, upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1')]]] }) },
  { name: 'intentions-http', snapshot: snapshot({ listener: { protocol: 'http' }, intentions: INTENTIONS }) },
  {
    name: 'access-logs-default',
    snapshot: snapshot({
      listener: { protocol: 'http' },
      intentions: INTENTIONS,
      upstreams: [upstream('api', { protocol: 'http2', localBindPort: 9191 }), upstream('db', { localBindPort: 9192 })],
      endpoints: [
        [upstream('api').key, [endpoint('node-1', '10.0.0.1')]],
        [upstream('db').key, [endpoint('node-3', '10.0.0.3')]],
      ],
      accessLogs: { enabled: true, disableListenerLogs: false, sink: { type: 'stdout' }, format: defaultAccessLogFormat() },
    }),
  },
  {
    name: 'access-logs-custom-format',
    snapshot: snapshot({
      upstreams: [upstream('api', { protocol: 'http', localBindPort: 9191, datacenter: 'dc2' })],
      accessLogs: {
        enabled: true,
        disableListenerLogs: true,
        sink: { type: 'file', path: '/var/log/access.log' },
        format: parseJsonFormat('{"t":"%START_TIME(%s.%3f)%","trace":"%REQ(X-B3-TRACEID?TRACEPARENT):32%","ct":"%RESP(CONTENT-TYPE)%","svc":"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"}'),
      },
    }),
  },
  {
    name: 'root-rotation',
    snapshot: snapshot({
      roots: roots({
        roots: [
          { id: PREVIOUS_ROOT_ID, rootCertPem: PEM.ca2, intermediateCertsPem: [], active: false },
          { id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [], active: true },
        ],
      }),
    }),
  },
  {
    // Proxy.Expose: a metrics path, an HTTP/2 path, the rerouted HTTP and gRPC checks; a path on
    // the public port is left out (README "Expose paths and checks").
    name: 'expose',
    snapshot: (() => {
      const base = snapshot({ listener: { protocol: 'http' }, accessLogs: { enabled: true, disableListenerLogs: false, sink: { type: 'stdout' }, format: defaultAccessLogFormat() } });
      const exposePath = (source: string, listenerPort: number, p: string, localPathPort: number, protocol: 'http' | 'http2') => ({ source, listenerPort, path: p, localPathPort, protocol });
      return {
        ...base,
        registration: {
          ...base.registration,
          expose: {
            checks: true,
            paths: [
              exposePath('Expose.Paths[0]', 21600, '/metrics', 9090, 'http'),
              exposePath('Expose.Paths[1]', 21601, "/it's$here", 9091, 'http2'),
              exposePath('Expose.Paths[2]', 21000, '/public', 8080, 'http'),
            ],
          },
        },
        exposedChecks: [
          { checkId: 'service:web:1', type: 'http' as const, exposedPort: 21500, path: '/health' },
          { checkId: 'service:web:2', type: 'grpc' as const, exposedPort: 21501, path: '/grpc.health.v1.Health/Check' },
        ],
      };
    })(),
  },
];

const tempDirs: string[] = [];
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function writeRunDir(model: HaproxyModel, config: string): string {
  const cfgPath = join(model.global.runDir, 'haproxy.cfg');
  for (const file of model.files) {
    const path = join(model.global.runDir, file.name);
    writeFileSync(path, file.content, { mode: file.mode });
    chmodSync(path, file.mode);
  }
  writeFileSync(cfgPath, config);
  return cfgPath;
}

function haproxyCheck(cfgPath: string): { status: number | null; output: string } {
  // cwd '/' proves every relative path resolves through crt-base/ca-base, not the cwd.
  const result = spawnSync(HAPROXY_BIN, ['-c', '-f', cfgPath], {
    cwd: '/',
    encoding: 'utf8',
    timeout: HAPROXY_CHECK_TIMEOUT_MS,
  });
  if (result.error !== undefined) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('translate + render golden configs', () => {
  for (const testCase of CASES) {
    test(testCase.name, () => {
      const model = translate(testCase.snapshot, { runDir: GOLDEN_RUN_DIR, ...testCase.options }).model;
      const config = render(model);
      const goldenPath = join(GOLDEN_DIR, `${testCase.name}.cfg`);
      if (UPDATE_GOLDEN) writeFileSync(goldenPath, config);
      assert.equal(config, readFileSync(goldenPath, 'utf8'), `rendered config differs from ${goldenPath} (UPDATE_GOLDEN=1 rewrites it)`);
      const spoe = model.files.find((f) => f.name === SPOE_CONFIG_FILE);
      if (spoe !== undefined) {
        const spoePath = join(GOLDEN_DIR, `${testCase.name}.${SPOE_CONFIG_FILE}`);
        if (UPDATE_GOLDEN) writeFileSync(spoePath, spoe.content);
        assert.equal(spoe.content, readFileSync(spoePath, 'utf8'), `SPOE config differs from ${spoePath} (UPDATE_GOLDEN=1 rewrites it)`);
      }
    });

    test(`${testCase.name}: haproxy -c accepts it`, () => {
      const runDir = mkdtempSync(join(tmpdir(), 'hc-golden-'));
      tempDirs.push(runDir);
      const model = translate(testCase.snapshot, { runDir, ...testCase.options }).model;
      const cfgPath = writeRunDir(model, render(model));
      const { status, output } = haproxyCheck(cfgPath);
      assert.equal(status, 0, `haproxy -c failed for ${testCase.name}:\n${output}`);
      assert.doesNotMatch(output, /\[(WARNING|ALERT)\]/, `haproxy -c warned for ${testCase.name}:\n${output}`);
    });
  }

  test('every golden file belongs to a case (no stale goldens)', () => {
    const expected = new Set(CASES.map((testCase) => `${testCase.name}.cfg`));
    const stale = readdirSync(GOLDEN_DIR).filter((name) => name.endsWith('.cfg') && !expected.has(name));
    assert.deepEqual(stale, []);
  });
});

describe('translate', () => {
  const options = { runDir: GOLDEN_RUN_DIR };

  test('leaf.pem holds the leaf, the active root intermediates and the key, mode 0600', () => {
    // Real certificates stand in for the intermediates (ones that do not parse are left out).
    const intermediate = PEM.ca2.trim();
    const model = translate(
      snapshot({
        roots: roots({
          roots: [
            { id: PREVIOUS_ROOT_ID, rootCertPem: PEM.ca2, intermediateCertsPem: [PEM.apiCert], active: false },
            { id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [intermediate], active: true },
          ],
        }),
      }),
      options,
    ).model;
    const leaf = model.files.find((file) => file.name === 'leaf.pem');
    assert.ok(leaf);
    assert.equal(leaf.mode, 0o600);
    assert.equal(leaf.content, `${PEM.webCert.trim()}\n${intermediate}\n${PEM.webKey.trim()}\n`);
    assert.ok(!leaf.content.includes(PEM.apiCert.trim().split('\n')[1] as string), 'not the intermediates of another root');
  });

  test('roots.pem holds every root sorted by id, mode 0644; crt-list has the SNI filter', () => {
    const model = translate(
      snapshot({
        listener: { protocol: 'grpc' },
        roots: roots({
          roots: [
            { id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [], active: true },
            { id: PREVIOUS_ROOT_ID, rootCertPem: PEM.ca2, intermediateCertsPem: [], active: false },
          ],
        }),
      }),
      options,
    ).model;
    assert.deepEqual(
      model.files.map((file) => [file.name, file.mode]),
      [
        ['leaf.pem', 0o600],
        ['public.crtlist', 0o644],
        ['roots.pem', 0o644],
      ],
    );
    assert.equal(model.files[2]?.content, `${PEM.ca2.trim()}\n${PEM.ca.trim()}\n`);
    assert.equal(model.files[1]?.content, 'leaf.pem [ca-file roots.pem verify required alpn h2,http/1.1] *.consul\n');
  });

  test('tcp public listener: crt-list without alpn', () => {
    const model = translate(snapshot(), options).model;
    assert.equal(model.files.find((file) => file.name === 'public.crtlist')?.content, 'leaf.pem [ca-file roots.pem verify required] *.consul\n');
  });

  test('is deterministic: shuffled upstreams and endpoints give the same model and text', () => {
    const endpoints = [endpoint('node-1', '10.0.0.1'), endpoint('node-2', '10.0.0.2'), endpoint('node-3', '10.0.0.3')];
    const a = snapshot({
      upstreams: [api, db],
      endpoints: [
        [api.key, endpoints],
        [db.key, []],
      ],
    });
    const b = snapshot({
      upstreams: [db, api],
      endpoints: [
        [db.key, []],
        [api.key, [...endpoints].reverse()],
      ],
    });
    assert.deepEqual(translate(a, options).model, translate(b, options).model);
    assert.equal(render(translate(a, options).model), render(translate(b, options).model));
  });

  test('an upstream nobody answered yet gets a backend without servers', () => {
    const model = translate(snapshot({ upstreams: [api] }), options).model;
    const backend = model.backends.find((candidate) => candidate.name.startsWith('upstream_'));
    assert.ok(backend);
    assert.deepEqual(backend.servers, []);
    assert.equal(backend.balance, 'roundrobin');
  });

  test('duplicate endpoint ids collapse to one server', () => {
    const model = translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1'), endpoint('node-1', '10.0.0.9')]]] }), options).model;
    assert.equal(model.backends[1]?.servers.length, 1);
  });

  test('weights as Envoy takes them: capped at 128, below 1 the instance gets no server', () => {
    const model = translate(
      snapshot({
        upstreams: [api],
        endpoints: [[api.key, [endpoint('a', '10.0.0.1', 1, 65535), endpoint('b', '10.0.0.2', 1, 7), endpoint('c', '10.0.0.3', 1, -3)]]],
      }),
      options,
    ).model;
    assert.deepEqual(
      model.backends[1]?.servers.map((server) => server.weight).sort((x, y) => x - y),
      [7, 128],
    );
  });

  test('server names are stable, unique and valid HAProxy names', () => {
    const model = translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node 1', '10.0.0.1'), endpoint('node_1', '10.0.0.2')]]] }), options).model;
    const names = model.backends[1]?.servers.map((server) => server.name) ?? [];
    assert.equal(new Set(names).size, 2);
    for (const name of names) assert.match(name, /^[A-Za-z0-9_.:-]+$/);
  });

  test('an invalid registration value fails as MODEL_INVALID naming the value', () => {
    assert.throws(
      () => translate(snapshot({ listener: { bindPort: 70000 } }), options).model,
      (err: unknown) => err instanceof Error && 'code' in err && err.code === 'MODEL_INVALID' && err.message.includes('70000'),
    );
  });
});

describe('translate: one bad item never stops the others', () => {
  const options = { runDir: GOLDEN_RUN_DIR };
  const good = endpoint('node-1', '10.0.0.1');

  test('a malformed instance is left out and reported; the good ones are served', () => {
    const { model, dropped } = translate(snapshot({ upstreams: [api], endpoints: [[api.key, [good, endpoint('node-2', 'bad host#1')]]] }), options);
    assert.deepEqual(
      model.backends[1]?.servers.map((s) => s.address),
      ['10.0.0.1'],
    );
    assert.equal(dropped.length, 1);
    assert.equal(dropped[0]?.kind, 'endpoint');
    assert.equal(dropped[0]?.item, `${api.key} node-2/api-sidecar-proxy`);
    assert.match(dropped[0]?.reason ?? '', /"bad host#1" is not an IPv4 or IPv6 address or a host name/);
  });

  test('ports out of range and instances Consul described badly are left out, naming the value', () => {
    const { model, dropped } = translate(
      snapshot({
        upstreams: [api],
        endpoints: [[api.key, [good, endpoint('node-2', '10.0.0.2', 0), endpoint('node-3', '10.0.0.3', 65536), { ...endpoint('node-4', ''), invalid: 'unexpected instance' }]]],
      }),
      options,
    );
    assert.equal(model.backends[1]?.servers.length, 1);
    assert.deepEqual(
      dropped.map((d) => d.reason.match(/port must be an integer in 1\.\.65535, got \d+|unexpected instance/)?.[0]),
      ['port must be an integer in 1..65535, got 0', 'port must be an integer in 1..65535, got 65536', 'unexpected instance'],
    );
  });

  test('an upstream whose listener cannot be rendered is left out; the other upstreams and the listener stay', () => {
    const bad = upstream('cache', { localBindAddress: 'not an address', localBindPort: 9300 });
    const { model, dropped } = translate(snapshot({ upstreams: [api, bad], endpoints: [[api.key, [good]]] }), options);
    assert.deepEqual(
      model.frontends.map((f) => f.name),
      ['public_listener', upstreamFrontendName(api.key)],
    );
    assert.deepEqual(
      dropped.map((d) => [d.kind, d.item]),
      [['upstream', bad.key]],
    );
    assert.match(dropped[0]?.reason ?? '', /"not an address"/);
  });

  test("an upstream listener on the public listener's port is left out", () => {
    const clash = upstream('cache', { localBindAddress: '0.0.0.0', localBindPort: 21000 });
    const { model, dropped } = translate(snapshot({ upstreams: [clash] }), options);
    assert.equal(model.frontends.length, 1);
    assert.match(dropped[0]?.reason ?? '', /overlaps the listener of frontend 'public_listener'/);
  });

  test('upstreams the registration already left out are reported with the rest', () => {
    const s = snapshot({ upstreams: [api] });
    const withDropped = { ...s, registration: { ...s.registration, droppedUpstreams: [{ kind: 'upstream' as const, item: 'Upstreams[1]', reason: "Config.protocol 'udp'" }] } };
    assert.deepEqual(
      translate(withDropped, options).dropped.map((d) => d.item),
      ['Upstreams[1]'],
    );
  });

  test('a root that does not parse is left out of the bundle; no readable root at all is fatal', () => {
    const garbage = { id: 'garbage', rootCertPem: 'not a certificate', intermediateCertsPem: [], active: false };
    const { model, dropped } = translate(snapshot({ roots: roots({ roots: [...roots().roots, garbage] }) }), options);
    assert.equal(model.files.find((f) => f.name === 'roots.pem')?.content, translate(snapshot(), options).model.files.find((f) => f.name === 'roots.pem')?.content);
    assert.deepEqual(
      dropped.map((d) => [d.kind, d.item]),
      [['root', 'garbage']],
    );
    assert.throws(
      () => translate(snapshot({ roots: roots({ roots: [garbage] }) }), options),
      (err: unknown) => err instanceof Error && 'code' in err && err.code === 'MODEL_INVALID' && err.message.includes('garbage'),
    );
  });

  test('certificate answers are remembered by text: the same bad root is reported again, and past the bound every text still gets its own answer', () => {
    const reasonsOf = (pem: string) =>
      translate(snapshot({ roots: roots({ roots: [...roots().roots, { id: 'r', rootCertPem: pem, intermediateCertsPem: [], active: false }] }) }), options).dropped.map((d) => d.reason);
    const first = reasonsOf('not a certificate');
    assert.equal(first.length, 1);
    assert.deepEqual(reasonsOf('not a certificate'), first);
    // More distinct texts than the memo holds (256): each is still judged on its own.
    for (let i = 0; i < 300; i++) assert.equal(reasonsOf(`garbage ${i}`).length, 1, `garbage ${i}`);
    const good = (roots().roots[0] as CaRoot).rootCertPem;
    assert.deepEqual(reasonsOf(good), []);
    assert.deepEqual(reasonsOf(' \n'), ['its RootCert is empty']);
  });

  test('an intermediate that does not parse is left out of leaf.pem; the root stays', () => {
    const withBad = roots({ roots: [{ ...(roots().roots[0] as CaRoot), intermediateCertsPem: ['garbage'] }] });
    const { model, dropped } = translate(snapshot({ roots: withBad }), options);
    assert.deepEqual(
      dropped.map((d) => [d.kind, d.item]),
      [['root', `${ACTIVE_ROOT_ID} IntermediateCerts[0]`]],
    );
    assert.equal(model.files.find((f) => f.name === 'leaf.pem')?.content, translate(snapshot(), options).model.files.find((f) => f.name === 'leaf.pem')?.content);
  });

  test('property: any instance values never break the model, and the good instance is always served', () => {
    const value = fc.oneof(fc.string(), fc.constantFrom('10.0.0.9', '::1', 'api.internal', 'bad host#1', '1.2.3.4 backup', '', 'a\nb', '"q"', '#'));
    const port = fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.double(), fc.constantFrom(Number.NaN, Infinity));
    fc.assert(
      fc.property(fc.array(fc.record({ id: fc.string(), address: value, port, weight: fc.oneof(fc.double(), fc.integer()) }), { maxLength: 8 }), (raw) => {
        const endpoints: Endpoint[] = [good, ...raw.map((r) => ({ id: `x/${r.id}`, node: 'x', address: r.address, port: r.port, weight: r.weight }))];
        const { model, dropped } = translate(snapshot({ upstreams: [api], endpoints: [[api.key, endpoints]] }), options);
        const servers = model.backends[1]?.servers ?? [];
        assert.ok(servers.some((s) => s.address === '10.0.0.1'));
        // Every instance is either served or reported (a bad one does not hide a good one with its id).
        // Instances weighted below 1 are unhealthy as Envoy decides: neither served nor reported.
        assert.ok(servers.length + dropped.length >= new Set(endpoints.filter((e) => e.weight >= 1).map((e) => e.id)).size);
        assert.ok(servers.length + dropped.length <= endpoints.length);
        const text = render(model);
        for (const s of servers) assert.ok(isValidAddress(s.address), s.address);
        assert.ok(!/server evil/.test(text));
      }),
      { numRuns: 300 },
    );
  });
});

describe('purity of the domain, translate and haproxy/', () => {
  const dir = (d: string): string[] => readdirSync(fileURLToPath(new URL(`../../src/${d}/`, import.meta.url))).map((name) => `../../src/${d}/${name}`);
  const sources = [
    ...dir('domain'),
    ...dir('translate'),
    // Everything that talks to HAProxy (processes, sockets, files) lives in src/driver/.
    ...dir('haproxy'),
  ];
  for (const source of sources) {
    test(`${source} uses no clock, randomness, environment or fs`, () => {
      const path = fileURLToPath(new URL(source, import.meta.url));
      assert.ok(statSync(path).isFile());
      const text = readFileSync(path, 'utf8');
      // Parsing is pure: `Date.parse` of a given string, a Date made from a given value, and
      // certificate and key parsing (fields and signature checks) are allowed; reading the clock
      // and the rest of node:crypto are not.
      const allowed = text
        .replace(/\bDate\.(parse|UTC)\(/g, '')
        .replace(/new Date\((?=[^)])/g, '')
        .replace(/\):?\s*Date\b|:\s*Date;/g, '')
        .replace(/import \{ X509Certificate(, createPrivateKey)?(, type KeyObject)? \} from 'node:crypto';/g, '');
      assert.doesNotMatch(allowed, /\bDate\b|Math\.random|\bprocess\.|performance\.|'node:(fs|fs\/promises|child_process|crypto|os|http|https|dgram)'/);
    });
  }
});
