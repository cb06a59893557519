import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, afterEach, before, describe, test } from 'node:test';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { parseConsulAddress } from '../../src/consul/http.js';
import { isHaproxyConnectError, type ErrorCode } from '../../src/errors.js';
import { waitFor } from '../../devtools/ports.js';
import { PEM } from '../helpers/fixtures.js';

const TOKEN = 'secret-token-0d7c';

type Handler = (req: IncomingMessage, res: ServerResponse, url: URL) => void;

interface Seen {
  path: string;
  query: URLSearchParams;
  rawQuery: string;
  token: string | undefined;
}

/** A node:http server playing the Consul agent: tests install one handler per path. */
class FakeAgentServer {
  readonly server: Server;
  readonly routes = new Map<string, Handler>();
  readonly seen: Seen[] = [];
  readonly sockets = new Set<import('node:net').Socket>();

  constructor() {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://agent');
      const token = req.headers['x-consul-token'];
      this.seen.push({ path: url.pathname, query: url.searchParams, rawQuery: url.search.slice(1), token: typeof token === 'string' ? token : undefined });
      const handler = this.routes.get(url.pathname);
      if (handler === undefined) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no route');
        return;
      }
      handler(req, res, url);
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  listen(target: { port: number; host: string } | { path: string }): Promise<void> {
    return new Promise((resolve) => this.server.listen(target, resolve));
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  json(path: string, body: unknown, headers: Record<string, string> = {}, status = 200): void {
    this.routes.set(path, (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function rejectsWith(code: ErrorCode, check?: (message: string) => void) {
  return (err: unknown): boolean => {
    assert.ok(isHaproxyConnectError(err, code), `expected ${code}, got ${String(err)}`);
    check?.(err.message);
    return true;
  };
}

const signal = (): AbortSignal => new AbortController().signal;

/** A chain as Consul 1.16.2 compiled it on a dev agent (resolver api: DefaultSubset v2, failover to api-backup, ring_hash). */
const CHAIN_JSON = {
  ServiceName: 'api',
  Namespace: 'default',
  Partition: 'default',
  Datacenter: 'dc1',
  Protocol: 'http',
  StartNode: 'resolver:v2.api.default.default.dc1',
  Nodes: {
    'resolver:v2.api.default.default.dc1': {
      Type: 'resolver',
      Name: 'v2.api.default.default.dc1',
      Resolver: { ConnectTimeout: '3s', RequestTimeout: 10000000000, Target: 'v2.api.default.default.dc1', Failover: { Targets: ['api-backup.default.default.dc1'] } },
      LoadBalancer: {
        Policy: 'ring_hash',
        HashPolicies: [
          { Field: 'header', FieldValue: 'x-user' },
          { SourceIP: true, Terminal: true },
        ],
      },
    },
  },
  Targets: {
    'api-backup.default.default.dc1': {
      ConnectTimeout: '5s',
      ID: 'api-backup.default.default.dc1',
      Service: 'api-backup',
      Namespace: 'default',
      Partition: 'default',
      Datacenter: 'dc1',
      MeshGateway: {},
      Subset: {},
      TransparentProxy: {},
      SNI: 'api-backup.default.dc1.internal.a8ffc67c-f204-4a96-8024-e5eec4bd6bd3.consul',
      Name: 'api-backup.default.dc1.internal.a8ffc67c-f204-4a96-8024-e5eec4bd6bd3.consul',
    },
    'v2.api.default.default.dc1': {
      ConnectTimeout: '3s',
      ID: 'v2.api.default.default.dc1',
      Service: 'api',
      ServiceSubset: 'v2',
      Namespace: 'default',
      Partition: 'default',
      Datacenter: 'dc1',
      MeshGateway: {},
      Subset: { Filter: 'Service.Meta.version == v2', OnlyPassing: true },
      TransparentProxy: {},
      SNI: 'v2.api.default.dc1.internal.a8ffc67c-f204-4a96-8024-e5eec4bd6bd3.consul',
      Name: 'v2.api.default.dc1.internal.a8ffc67c-f204-4a96-8024-e5eec4bd6bd3.consul',
    },
  },
  AutoVirtualIPs: ['240.0.0.1'],
  ManualVirtualIPs: [],
};

const entry = (node: string, nodeAddr: string, id: string, addr: string, port: number, weights?: unknown) => ({
  Node: { ID: 'x', Node: node, Address: nodeAddr, Datacenter: 'dc1', TaggedAddresses: null, Meta: null },
  Service: { Kind: 'connect-proxy', ID: id, Service: 'db-sidecar-proxy', Address: addr, Port: port, ...(weights !== undefined && { Weights: weights }) },
  Checks: [],
});

describe('ConsulHttpClient over TCP', () => {
  const agent = new FakeAgentServer();
  let client: ConsulHttpClient;

  before(async () => {
    await agent.listen({ port: 0, host: '127.0.0.1' });
    client = new ConsulHttpClient({ address: `127.0.0.1:${agent.port}`, token: TOKEN });
  });
  after(async () => {
    await client.close();
    await agent.close();
  });
  afterEach(() => {
    agent.routes.clear();
    agent.seen.length = 0;
  });

  test('bare host:port means http; agentSelf sends the token header', async () => {
    assert.equal(client.address, `http://127.0.0.1:${agent.port}`);
    agent.json('/v1/agent/self', { Config: { Datacenter: 'dc1', NodeName: 'n1', Other: 1 }, Member: {} });
    assert.deepEqual(await client.agentSelf(signal()), { datacenter: 'dc1', nodeName: 'n1' });
    assert.equal(agent.seen[0]?.token, TOKEN);
  });

  test('listProxyServices keeps connect-proxy services; null tags are empty', async () => {
    agent.json('/v1/agent/services', {
      web: { ID: 'web', Service: 'web', Tags: ['a'], Port: 8080 },
      'web-sidecar-proxy': {
        Kind: 'connect-proxy',
        ID: 'web-sidecar-proxy',
        Service: 'web-sidecar-proxy',
        Tags: null,
        Proxy: { DestinationServiceName: 'web', DestinationServiceID: 'web' },
      },
    });
    assert.deepEqual(await client.listProxyServices(signal()), [{ id: 'web-sidecar-proxy', name: 'web-sidecar-proxy', tags: [], destinationServiceId: 'web', destinationServiceName: 'web' }]);
  });

  test('proxyRegistration: hash-based blocking, id escaped, registration parsed', async () => {
    agent.json(
      '/v1/agent/service/web%2Fsidecar',
      {
        Kind: 'connect-proxy',
        ID: 'web/sidecar',
        Service: 'web-sidecar-proxy',
        Port: 21000,
        Proxy: { DestinationServiceName: 'web', DestinationServiceID: 'web', LocalServicePort: 8080, Config: null, Upstreams: null },
      },
      { 'X-Consul-ContentHash': 'abc123' },
    );
    const first = await client.proxyRegistration('web/sidecar', {}, signal());
    assert.deepEqual(first.cursor, { hash: 'abc123' });
    assert.equal(first.value.publicListener.bindPort, 21000);
    assert.equal(agent.seen[0]?.rawQuery, '');
    await client.proxyRegistration('web/sidecar', first.cursor, signal());
    assert.equal(agent.seen[1]?.rawQuery, 'hash=abc123&wait=300s');
  });

  test('proxyRegistration: 404 is SIDECAR_NOT_FOUND', async () => {
    await assert.rejects(
      client.proxyRegistration('nope', {}, signal()),
      rejectsWith('SIDECAR_NOT_FOUND', (m) => assert.match(m, /'nope'/)),
    );
  });

  test('leaf: index-based blocking sends index and wait, reads X-Consul-Index', async () => {
    agent.json(
      '/v1/agent/connect/ca/leaf/web',
      { SerialNumber: '0a', CertPEM: PEM.webCert, PrivateKeyPEM: PEM.webKey, ValidBefore: '2030-01-01T00:00:00Z', ModifyIndex: 42, Service: 'web' },
      { 'X-Consul-Index': '42' },
    );
    const first = await client.leaf('web', {}, signal());
    assert.deepEqual(first, {
      value: { certPem: PEM.webCert, privateKeyPem: PEM.webKey, serialNumber: '0a', validBefore: '2030-01-01T00:00:00Z', modifyIndex: 42 },
      cursor: { index: 42 },
    });
    await client.leaf('web', { index: 42 }, signal());
    assert.equal(agent.seen[0]?.rawQuery, '');
    assert.equal(agent.seen[1]?.rawQuery, 'index=42&wait=300s');
  });

  test('leaf: a certificate that cannot be served is CERTIFICATE_INVALID naming what is wrong', async () => {
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ['garbage PEM', { CertPEM: '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n', PrivateKeyPEM: PEM.webKey }, /CertPEM does not parse as a PEM certificate/],
      ['garbage key', { CertPEM: PEM.webCert, PrivateKeyPEM: 'not a key' }, /PrivateKeyPEM does not parse as a PEM private key/],
      ['a key that does not match', { CertPEM: PEM.webCert, PrivateKeyPEM: PEM.apiKey }, /PrivateKeyPEM is not the key of its certificate/],
      ['an expired leaf', { CertPEM: PEM.expiredCert, PrivateKeyPEM: PEM.expiredKey }, /expired at 20\d\d-/],
    ];
    for (const [what, pems, message] of cases) {
      agent.json('/v1/agent/connect/ca/leaf/web', { SerialNumber: '0b', ValidBefore: '2030-01-01T00:00:00Z', ModifyIndex: 43, ...pems }, { 'X-Consul-Index': '43' });
      await assert.rejects(
        client.leaf('web', {}, signal()),
        rejectsWith('CERTIFICATE_INVALID', (m) => {
          assert.match(m, message, what);
          assert.match(m, /serial 0b/, what);
          assert.ok(!m.includes('PRIVATE KEY'), `${what}: the message must not carry the key`);
        }),
      );
    }
  });

  test('roots: null IntermediateCerts and null Roots are empty lists', async () => {
    agent.json(
      '/v1/agent/connect/ca/roots',
      { TrustDomain: 'td.consul', ActiveRootID: 'r1', Roots: [{ ID: 'r1', RootCert: 'PEM', IntermediateCerts: null, Active: true, Name: 'x' }] },
      { 'X-Consul-Index': '7' },
    );
    assert.deepEqual(await client.roots({}, signal()), {
      value: { trustDomain: 'td.consul', activeRootId: 'r1', roots: [{ id: 'r1', rootCertPem: 'PEM', intermediateCertsPem: [], active: true }] },
      cursor: { index: 7 },
    });
    agent.json('/v1/agent/connect/ca/roots', { TrustDomain: '', ActiveRootID: '', Roots: null }, { 'X-Consul-Index': '1' });
    assert.deepEqual((await client.roots({}, signal())).value.roots, []);
  });

  test('garbage shape is CONSUL_RESPONSE_INVALID naming the path and the field', async () => {
    agent.json('/v1/agent/connect/ca/roots', { TrustDomain: 'td', ActiveRootID: 'r1', Roots: [{ ID: 'r1', RootCert: 12, Active: true }] }, { 'X-Consul-Index': '7' });
    await assert.rejects(
      client.roots({}, signal()),
      rejectsWith('CONSUL_RESPONSE_INVALID', (m) => {
        assert.match(m, /\/v1\/agent\/connect\/ca\/roots/);
        assert.match(m, /Roots\[0\]\.RootCert: .*expected string/i);
      }),
    );
  });

  test('invalid JSON is CONSUL_RESPONSE_INVALID', async () => {
    agent.routes.set('/v1/agent/self', (_req, res) => res.writeHead(200).end('{not json'));
    await assert.rejects(
      client.agentSelf(signal()),
      rejectsWith('CONSUL_RESPONSE_INVALID', (m) => assert.match(m, /\/v1\/agent\/self returned invalid JSON/)),
    );
  });

  test('a missing X-Consul-Index is CONSUL_RESPONSE_INVALID', async () => {
    agent.json('/v1/agent/connect/ca/roots', { TrustDomain: 'td', ActiveRootID: '', Roots: [] });
    await assert.rejects(
      client.roots({}, signal()),
      rejectsWith('CONSUL_RESPONSE_INVALID', (m) => assert.match(m, /X-Consul-Index \(missing\)/)),
    );
  });

  test('403 is CONSUL_FORBIDDEN naming the path, never the token', async () => {
    agent.routes.set('/v1/agent/connect/ca/leaf/web', (_req, res) => res.writeHead(403).end(`Permission denied: token with AccessorID 'a1' lacks permission 'service:write' (echo ${TOKEN})`));
    await assert.rejects(
      client.leaf('web', {}, signal()),
      rejectsWith('CONSUL_FORBIDDEN', (m) => {
        assert.match(m, /\/v1\/agent\/connect\/ca\/leaf\/web/);
        assert.match(m, /rejected the ACL token/);
        assert.match(m, /Permission denied/);
        assert.ok(!m.includes(TOKEN));
      }),
    );
  });

  // Bodies and headers as a Consul 1.16.2 dev agent answers GET /v1/config/mesh/mesh.
  test('meshConfig: no entry is a 404 that blocks and carries X-Consul-Index; it reads as the defaults', async () => {
    agent.routes.set('/v1/config/mesh/mesh', (_req, res) => res.writeHead(404, { 'X-Consul-Index': '15', 'content-type': 'text/plain' }).end('Config entry not found for "mesh" / "mesh"'));
    const first = await client.meshConfig({}, signal());
    assert.deepEqual(first, { value: { sanitizeXForwardedClientCert: false }, cursor: { index: 15 } });
    await client.meshConfig(first.cursor, signal());
    assert.equal(agent.seen[0]?.rawQuery, '');
    assert.equal(agent.seen[1]?.rawQuery, 'index=15&wait=300s');
  });

  test('meshConfig: HTTP.SanitizeXForwardedClientCert true, false, or no HTTP block (omitempty)', async () => {
    const cases: Array<[Record<string, unknown>, boolean]> = [
      [{ HTTP: { SanitizeXForwardedClientCert: true } }, true],
      [{ HTTP: { SanitizeXForwardedClientCert: false } }, false],
      [{ HTTP: {} }, false],
      [{ TransparentProxy: { MeshDestinationsOnly: true } }, false],
    ];
    for (const [entry, sanitize] of cases) {
      agent.json('/v1/config/mesh/mesh', { Kind: 'mesh', TransparentProxy: { MeshDestinationsOnly: false }, ...entry, CreateIndex: 26, ModifyIndex: 27 }, { 'X-Consul-Index': '27' });
      assert.deepEqual(await client.meshConfig({}, signal()), { value: { sanitizeXForwardedClientCert: sanitize }, cursor: { index: 27 } }, JSON.stringify(entry));
    }
  });

  test('meshConfig: a malformed entry is CONSUL_RESPONSE_INVALID naming the field and the value', async () => {
    agent.json('/v1/config/mesh/mesh', { Kind: 'mesh', HTTP: { SanitizeXForwardedClientCert: 'yes' } }, { 'X-Consul-Index': '30' });
    await assert.rejects(
      client.meshConfig({}, signal()),
      rejectsWith('CONSUL_RESPONSE_INVALID', (m) =>
        assert.match(m, /GET \/v1\/config\/mesh\/mesh returned the mesh config entry with HTTP\.SanitizeXForwardedClientCert "yes", expected true or false/),
      ),
    );
    agent.json('/v1/config/mesh/mesh', { Kind: 'proxy-defaults' }, { 'X-Consul-Index': '31' });
    await assert.rejects(
      client.meshConfig({}, signal()),
      rejectsWith('CONSUL_RESPONSE_INVALID', (m) => assert.match(m, /Kind/)),
    );
  });

  test('meshConfig: 403 (only an unknown token: any token may read the mesh entry) is CONSUL_FORBIDDEN, as for every watch', async () => {
    agent.routes.set('/v1/config/mesh/mesh', (_req, res) => res.writeHead(403).end('ACL not found'));
    await assert.rejects(
      client.meshConfig({}, signal()),
      rejectsWith('CONSUL_FORBIDDEN', (m) => assert.match(m, /\/v1\/config\/mesh\/mesh \(403\): ACL not found/)),
    );
  });

  test('other statuses are CONSUL_HTTP with status and body excerpt', async () => {
    agent.routes.set('/v1/agent/self', (_req, res) => res.writeHead(500).end('rpc error: No cluster leader'));
    await assert.rejects(
      client.agentSelf(signal()),
      rejectsWith('CONSUL_HTTP', (m) => assert.match(m, /GET \/v1\/agent\/self with HTTP 500: rpc error: No cluster leader/)),
    );
  });
  test("429 (the agent's per-client connection limit) names the agent setting to raise", async () => {
    // Consul 1.16.2 answers the 201st concurrent connection from one address like this (measured).
    agent.routes.set('/v1/agent/self', (_req, res) => res.writeHead(429).end('Your IP is issuing too many concurrent connections, please rate limit your calls'));
    await assert.rejects(
      client.agentSelf(signal()),
      rejectsWith('CONSUL_HTTP', (m) => assert.match(m, /HTTP 429: .*limits\.http_max_conns_per_client, default 200/)),
    );
  });

  test('upstreamEndpoints: cached, dc, ns (never passing: health is decided locally); address fallback, weights, sorted', async () => {
    agent.json(
      '/v1/health/connect/db',
      [entry('node-b', '10.0.0.2', 'db-sidecar-proxy', '', 21000, { Passing: 3, Warning: 1 }), entry('node-a', '10.0.0.1', 'db-sidecar-proxy', '192.168.0.1', 21001)],
      { 'X-Consul-Index': '100' },
    );
    const got = await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: 'team', datacenter: 'dc2' }, { index: 99 }, signal());
    assert.deepEqual(got, {
      value: [
        { id: 'node-a/db-sidecar-proxy', node: 'node-a', address: '192.168.0.1', port: 21001, weight: 1 },
        { id: 'node-b/db-sidecar-proxy', node: 'node-b', address: '10.0.0.2', port: 21000, weight: 3, warningWeight: 1 },
      ],
      cursor: { index: 100 },
    });
    assert.equal(agent.seen[0]?.rawQuery, 'cached&dc=dc2&ns=team&index=99&wait=300s');
    await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: 'default', datacenter: '' }, {}, signal());
    assert.equal(agent.seen[1]?.rawQuery, 'cached');
    await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: 'default', datacenter: '', filter: 'Service.Meta.version == "v1"' }, {}, signal());
    assert.equal(agent.seen[2]?.query.get('filter'), 'Service.Meta.version == "v1"');
  });

  test('upstreamEndpoints: the worst check decides the status (any critical, else any non-passing is a warning)', async () => {
    const withChecks = (node: string, statuses: string[]) => ({ ...entry(node, '10.0.0.1', 'db-sidecar-proxy', '', 21000), Checks: statuses.map((Status) => ({ Status })) });
    agent.json(
      '/v1/health/connect/db',
      [withChecks('a', ['passing', 'passing']), withChecks('b', ['passing', 'warning']), withChecks('c', ['warning', 'critical']), withChecks('d', ['maintenance'])],
      {
        'X-Consul-Index': '7',
      },
    );
    const got = await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: '', datacenter: '' }, {}, signal());
    assert.deepEqual(
      got.value.map((e) => [e.node, e.status]),
      [
        ['a', 'passing'],
        ['b', 'warning'],
        ['c', 'critical'],
        ['d', 'warning'],
      ],
    );
  });

  test('discoveryChain: POST with the overrides, compile-dc and cached, blocking; the start resolver and its failover become the chain', async () => {
    let body = '';
    agent.routes.set('/v1/discovery-chain/api', (req, res) => {
      let data = '';
      req.on('data', (c: Buffer) => {
        data += c.toString();
      });
      req.on('end', () => {
        body = `${req.method} ${data}`;
        res.writeHead(200, { 'content-type': 'application/json', 'X-Consul-Index': '18' }).end(JSON.stringify({ Chain: CHAIN_JSON }));
      });
    });
    const query = { upstream: 'service:default/api@', name: 'api', datacenter: 'dc2', localDatacenter: 'dc1', overrideProtocol: 'tcp', overrideConnectTimeoutMs: 1500 };
    const got = await client.discoveryChain(query, { index: 17 }, signal());
    assert.equal(body, 'POST {"OverrideProtocol":"tcp","OverrideConnectTimeout":"1500ms"}');
    assert.equal(agent.seen[0]?.rawQuery, 'compile-dc=dc2&cached&index=17&wait=300s');
    assert.equal(got.cursor.index, 18);
    assert.deepEqual(
      got.value.targets.map((t) => [t.id, t.filter, t.onlyPassing, t.connectTimeoutMs]),
      [
        ['v2.api.default.default.dc1', 'Service.Meta.version == v2', true, 3000],
        ['api-backup.default.default.dc1', '', false, 5000],
      ],
    );
    assert.deepEqual(got.value.loadBalancer, {
      policy: 'ring_hash',
      choiceCount: 2,
      hashPolicies: [
        { source: { kind: 'header', name: 'x-user' }, terminal: false },
        { source: { kind: 'source_ip' }, terminal: true },
      ],
    });
  });

  test('upstreamEndpoints: an entry of the wrong shape becomes an invalid endpoint; the others are read', async () => {
    const bad = { Node: { Node: 'node-c', Address: '10.0.0.3' }, Service: { ID: 'db-sidecar-proxy', Port: '21000' } };
    agent.json('/v1/health/connect/db', [entry('node-a', '10.0.0.1', 'db-sidecar-proxy', '', 21000), bad, { nonsense: true }], { 'X-Consul-Index': '5' });
    const got = await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: '', datacenter: '' }, {}, signal());
    assert.deepEqual(
      got.value.map((e) => [e.id, e.invalid === undefined]),
      [
        ['entry 2', false],
        ['node-a/db-sidecar-proxy', true],
        ['node-c/db-sidecar-proxy', false],
      ],
    );
    assert.match(got.value.find((e) => e.id === 'node-c/db-sidecar-proxy')?.invalid ?? '', /Service\.Port: .*expected number/i);
  });

  test('upstreamEndpoints: a null list is empty', async () => {
    agent.json('/v1/health/connect/db', null, { 'X-Consul-Index': '3' });
    const got = await client.upstreamEndpoints({ destinationName: 'db', destinationNamespace: '', datacenter: '' }, {}, signal());
    assert.deepEqual(got.value, []);
  });

  test('preparedQueryEndpoints: connect=true and the Nodes list', async () => {
    agent.json('/v1/query/q1/execute', { Service: 'db', Nodes: [entry('n', '10.0.0.9', 'p1', '', 2000)], Datacenter: 'dc1' });
    const got = await client.preparedQueryEndpoints({ destinationName: 'q1', destinationNamespace: 'default', datacenter: '' }, signal());
    assert.deepEqual(got, [{ id: 'n/p1', node: 'n', address: '10.0.0.9', port: 2000, weight: 1 }]);
    assert.equal(agent.seen[0]?.rawQuery, 'connect=true');
  });

  test('abort while blocked: rejects with the reason and releases the request', async () => {
    let arrived = false;
    agent.routes.set('/v1/agent/connect/ca/roots', () => {
      arrived = true; // never answers, like a blocking query
    });
    const controller = new AbortController();
    const pending = client.roots({ index: 5 }, controller.signal);
    await waitFor('the request to reach the agent', async () => (arrived ? true : undefined), 2_000, 5);
    const reason = new Error('shutdown');
    controller.abort(reason);
    await assert.rejects(pending, (err: unknown) => err === reason);
  });

  test('the blocking wait is configurable', async () => {
    const short = new ConsulHttpClient({ address: `http://127.0.0.1:${agent.port}`, waitSeconds: 10 });
    try {
      agent.json('/v1/agent/connect/ca/roots', { TrustDomain: 'td', ActiveRootID: '', Roots: [] }, { 'X-Consul-Index': '9' });
      await short.roots({ index: 8 }, signal());
      assert.equal(agent.seen[0]?.rawQuery, 'index=8&wait=10s');
      assert.equal(agent.seen[0]?.token, undefined);
    } finally {
      await short.close();
    }
  });
});

describe('ConsulHttpClient failures and transports', () => {
  test('connection refused is CONSUL_UNREACHABLE naming the address', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const client = new ConsulHttpClient({ address: `http://127.0.0.1:${port}` });
    try {
      await assert.rejects(
        client.agentSelf(signal()),
        rejectsWith('CONSUL_UNREACHABLE', (m) => {
          assert.match(m, new RegExp(`Cannot reach Consul agent at http://127\\.0\\.0\\.1:${port}`));
          assert.match(m, /ECONNREFUSED/);
        }),
      );
    } finally {
      await client.close();
    }
  });

  test('unix socket transport', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'consul-client-'));
    const socketPath = join(dir, 'agent.sock');
    const agent = new FakeAgentServer();
    await agent.listen({ path: socketPath });
    const client = new ConsulHttpClient({ address: `unix://${socketPath}`, token: TOKEN });
    try {
      agent.json('/v1/agent/self', { Config: { Datacenter: 'dc9', NodeName: 'sock' } });
      assert.equal(client.address, `unix://${socketPath}`);
      assert.deepEqual(await client.agentSelf(signal()), { datacenter: 'dc9', nodeName: 'sock' });
      assert.equal(agent.seen[0]?.token, TOKEN);
    } finally {
      await client.close();
      await agent.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('https: the CA file verifies the agent and the client certificate is presented; without the CA it is CONSUL_UNREACHABLE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'consul-tls-'));
    const run = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-subj', '/CN=Test Agent CA', '-days', '2', '-out', 'ca.pem');
    for (const [name, ext] of [
      ['agent', 'subjectAltName=IP:127.0.0.1'],
      ['client', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      run('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
      writeFileSync(join(dir, `${name}.ext`), `${ext}\n`);
      run('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
    }
    const peers: Array<string | undefined> = [];
    const server = createHttpsServer(
      { cert: readFileSync(join(dir, 'agent.pem')), key: readFileSync(join(dir, 'agent.key')), ca: readFileSync(join(dir, 'ca.pem')), requestCert: true, rejectUnauthorized: false },
      (req, res) => {
        peers.push(String((req.socket as TLSSocket).getPeerCertificate().subject?.CN));
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ Config: { Datacenter: 'dc-tls', NodeName: 'n' } }));
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const trusted = new ConsulHttpClient({ address, tls: { verify: true, caFile: join(dir, 'ca.pem'), certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') } });
    const untrusted = new ConsulHttpClient({ address, tls: { verify: true } });
    const unverified = new ConsulHttpClient({ address, tls: { verify: false } });
    try {
      assert.deepEqual(await trusted.agentSelf(signal()), { datacenter: 'dc-tls', nodeName: 'n' });
      assert.deepEqual(peers, ['client']);
      await assert.rejects(
        untrusted.agentSelf(signal()),
        rejectsWith('CONSUL_UNREACHABLE', (m) => assert.match(m, /https:\/\/127\.0\.0\.1:\d+: .*(certificate|UNABLE_TO)/i)),
      );
      assert.deepEqual(await unverified.agentSelf(signal()), { datacenter: 'dc-tls', nodeName: 'n' });
    } finally {
      await Promise.all([trusted.close(), untrusted.close(), unverified.close()]);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an answer cut short is CONSUL_UNREACHABLE, never a truncated body parsed', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000', 'x-consul-index': '5' });
      res.write('{"Config":{"Datacenter":"dc1"');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = new ConsulHttpClient({ address: `127.0.0.1:${(server.address() as AddressInfo).port}` });
    try {
      await assert.rejects(client.agentSelf(signal()), rejectsWith('CONSUL_UNREACHABLE'));
    } finally {
      await client.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('a missing unix socket is CONSUL_UNREACHABLE', async () => {
    const client = new ConsulHttpClient({ address: 'unix:///nonexistent/dir/agent.sock' });
    try {
      await assert.rejects(
        client.agentSelf(signal()),
        rejectsWith('CONSUL_UNREACHABLE', (m) => assert.match(m, /unix:\/\/\/nonexistent\/dir\/agent\.sock/)),
      );
    } finally {
      await client.close();
    }
  });

  test('parseConsulAddress', () => {
    assert.deepEqual(parseConsulAddress('127.0.0.1:8500'), { peer: { host: '127.0.0.1', port: 8500 }, tls: false, display: 'http://127.0.0.1:8500' });
    assert.deepEqual(parseConsulAddress('https://consul.local:8501'), { peer: { host: 'consul.local', port: 8501 }, tls: true, display: 'https://consul.local:8501' });
    assert.deepEqual(parseConsulAddress('https://consul.local'), { peer: { host: 'consul.local', port: 443 }, tls: true, display: 'https://consul.local' });
    assert.deepEqual(parseConsulAddress('http://[::1]'), { peer: { host: '::1', port: 80 }, tls: false, display: 'http://[::1]' });
    assert.deepEqual(parseConsulAddress('unix:///run/consul.sock'), { peer: { socketPath: '/run/consul.sock' }, tls: false, display: 'unix:///run/consul.sock' });
    for (const bad of ['ftp://h:1', 'unix://', 'http://u:p@h:1', 'http://h:1/path', 'http://h:99999']) {
      assert.throws(() => parseConsulAddress(bad), rejectsWith('CONFIG_INVALID'), bad);
    }
    assert.throws(() => new ConsulHttpClient({ address: 'h:1', waitSeconds: 601 }), rejectsWith('CONFIG_INVALID'));
    assert.throws(
      () => new ConsulHttpClient({ address: 'https://h:1', tls: { verify: true, caFile: '/nonexistent/ca.pem' } }),
      rejectsWith('CONFIG_INVALID', (m) => assert.match(m, /\/nonexistent\/ca\.pem/)),
    );
  });
});
