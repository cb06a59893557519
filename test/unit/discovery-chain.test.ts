/**
 * Compiled discovery chains → the upstream's Chain (consul/discovery-chain.ts), Consul's two
 * duration forms, and the health decision translate makes per target (Envoy's rule).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { chainFromCompiled } from '../../src/consul/discovery-chain.js';
import { parseDurationMs } from '../../src/consul/duration.js';
import { discoveryChainSchema } from '../../src/consul/schemas.js';
import type { Endpoint, Target } from '../../src/domain/snapshot.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { uriSanDerHex } from '../../src/haproxy/render.js';
import { healthyEndpoints, targetIdentity } from '../../src/translate/targets.js';
import { PEM } from '../helpers/fixtures.js';

type Json = Record<string, unknown>;

function targetJson(id: string, service: string, extra: Json = {}): Json {
  return { ID: id, Service: service, Namespace: 'default', Partition: 'default', Datacenter: 'dc1', MeshGateway: {}, Subset: {}, ConnectTimeout: '5s', ...extra };
}

function compiled(resolver: Json, targets: Json[], loadBalancer?: Json) {
  const start = `resolver:${String(resolver['Target'])}`;
  return discoveryChainSchema.parse({
    Chain: {
      ServiceName: 'api',
      Datacenter: 'dc1',
      Protocol: 'tcp',
      StartNode: start,
      Nodes: { [start]: { Type: 'resolver', Name: String(resolver['Target']), Resolver: resolver, ...(loadBalancer !== undefined && { LoadBalancer: loadBalancer }) } },
      Targets: Object.fromEntries(targets.map((t) => [t['ID'], t])),
    },
  }).Chain;
}

describe('chainFromCompiled', () => {
  test("the default chain: one target, Consul's 5 s connect timeout, round robin", () => {
    const chain = chainFromCompiled(
      'service:default/api@',
      compiled({ ConnectTimeout: '5s', Default: true, Target: 'api.default.default.dc1' }, [targetJson('api.default.default.dc1', 'api')]),
      'dc1',
    );
    assert.deepEqual(chain, {
      targets: [
        {
          id: 'api.default.default.dc1',
          kind: 'service',
          service: 'api',
          namespace: 'default',
          partition: 'default',
          datacenter: 'dc1',
          filter: '',
          onlyPassing: false,
          connectTimeoutMs: 5_000,
          meshGatewayMode: '',
        },
      ],
    });
  });

  test('failover targets follow the primary in order, each with its own timeout; least_request without ChoiceCount draws 2', () => {
    const chain = chainFromCompiled(
      'u',
      compiled(
        { ConnectTimeout: '1.5s', Target: 'api.default.default.dc1', Failover: { Targets: ['b.default.default.dc1', 'c.default.default.dc2'] } },
        [
          targetJson('api.default.default.dc1', 'api', { ConnectTimeout: '1.5s' }),
          targetJson('b.default.default.dc1', 'b', { ConnectTimeout: 2_000_000_000 }),
          targetJson('c.default.default.dc2', 'c', { Datacenter: 'dc2' }),
        ],
        { Policy: 'least_request' },
      ),
      'dc1',
    );
    assert.deepEqual(
      chain.targets.map((t) => [t.id, t.connectTimeoutMs, t.datacenter]),
      [
        ['api.default.default.dc1', 1500, 'dc1'],
        ['b.default.default.dc1', 2000, 'dc1'],
        ['c.default.default.dc2', 5000, 'dc2'],
      ],
    );
    assert.deepEqual(chain.loadBalancer, { policy: 'least_request', choiceCount: 2, hashPolicies: [] });
  });

  test('a remote target behind a mesh gateway, and a peer target, are refused by name; the rest applies', () => {
    const chain = chainFromCompiled(
      'service:default/api@',
      compiled({ Target: 'api.default.default.dc1', Failover: { Targets: ['api.default.default.dc2', 'api.default.default.dc3', 'api.default.peer1'] } }, [
        targetJson('api.default.default.dc1', 'api'),
        targetJson('api.default.default.dc2', 'api', { Datacenter: 'dc2', MeshGateway: { Mode: 'local' } }),
        targetJson('api.default.default.dc3', 'api', { Datacenter: 'dc3', MeshGateway: { Mode: 'none' } }),
        targetJson('api.default.peer1', 'api', { Datacenter: '', Peer: 'peer1' }),
      ]),
      'dc1',
    );
    assert.deepEqual(
      chain.targets.map((t) => t.id),
      ['api.default.default.dc1', 'api.default.default.dc3'],
    );
    assert.equal(chain.refused?.length, 2);
    assert.match(chain.refused?.[0] ?? '', /api\.default\.default\.dc2 in datacenter dc2 goes through a mesh gateway \(mode local\)/);
    assert.match(chain.refused?.[1] ?? '', /cluster peer "peer1"/);
  });

  test('errors name the upstream and the value: unknown policy, missing target, a start that is not a resolver, a bad duration', () => {
    const target = targetJson('api.default.default.dc1', 'api');
    const cases: Array<[string, () => unknown, RegExp]> = [
      [
        'policy',
        () => chainFromCompiled('service:default/api@', compiled({ Target: 'api.default.default.dc1' }, [target], { Policy: 'fastest' }), 'dc1'),
        /upstream service:default\/api@: LoadBalancer\.Policy "fastest"/,
      ],
      [
        'missing',
        () => chainFromCompiled('u1', compiled({ Target: 'api.default.default.dc1', Failover: { Targets: ['gone.default.default.dc1'] } }, [target]), 'dc1'),
        /upstream u1: names target "gone\.default\.default\.dc1"/,
      ],
      [
        'duration',
        () => chainFromCompiled('u2', compiled({ Target: 'api.default.default.dc1' }, [{ ...target, ConnectTimeout: '5 s' }]), 'dc1'),
        /target api\.default\.default\.dc1 has ConnectTimeout "5 s"/,
      ],
      [
        'router',
        () =>
          chainFromCompiled(
            'u3',
            { ServiceName: 'api', Datacenter: 'dc1', Protocol: 'tcp', StartNode: 'router:api', Nodes: { 'router:api': { Type: 'router', Name: 'api', Routes: [], Splits: [] } }, Targets: {} },
            'dc1',
          ),
        /upstream u3: a tcp chain starts at a router node/,
      ],
    ];
    for (const [name, run, message] of cases) {
      assert.throws(run, (err: unknown) => isHaproxyConnectError(err, 'CONSUL_RESPONSE_INVALID') && message.test(err.message), name);
    }
  });
});

describe('parseDurationMs', () => {
  test('Go duration strings and integer nanoseconds (Consul writes both)', () => {
    const cases: Array<[unknown, number | undefined]> = [
      ['5s', 5000],
      ['1.5s', 1500],
      ['1500ms', 1500],
      ['1m30s', 90_000],
      ['2h45m0.5s', 9_900_500],
      ['0', 0],
      [10_000_000_000, 10_000],
      ['10000000000', 10_000],
      ['5 s', undefined],
      ['', undefined],
      ['1.5', undefined],
      [-1, undefined],
      [null, undefined],
    ];
    for (const [input, ms] of cases) assert.equal(parseDurationMs(input), ms, JSON.stringify(input));
  });

  test('property: any whole number of milliseconds round-trips through both forms', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (ms) => {
        assert.equal(parseDurationMs(`${ms}ms`), ms);
        assert.equal(parseDurationMs(ms * 1e6), ms);
      }),
    );
  });
});

describe('healthyEndpoints (Envoy: agent/xds/endpoints.go)', () => {
  const target = (onlyPassing: boolean): Target => ({ id: 't', kind: 'service', service: 'api', namespace: 'default', partition: 'default', datacenter: 'dc1', onlyPassing });
  const ep = (id: string, extra: Partial<Endpoint> = {}): Endpoint => ({ id, node: 'n', address: '10.0.0.1', port: 21000, weight: 1, ...extra });
  const endpoints = [
    ep('passing', { status: 'passing', weight: 3 }),
    ep('warning', { status: 'warning', weight: 3, warningWeight: 2 }),
    ep('critical', { status: 'critical' }),
    ep('unknown'),
    ep('zero', { weight: 0 }),
    ep('warn-zero', { status: 'warning', warningWeight: 0 }),
    ep('heavy', { weight: 1000 }),
  ];

  test('critical is out; warning is in (with Weights.Warning) unless OnlyPassing; a weight below 1 is out; capped at 128', () => {
    assert.deepEqual(
      healthyEndpoints(endpoints, target(false)).map((e) => [e.id, e.weight]),
      [
        ['passing', 3],
        ['warning', 2],
        ['unknown', 1],
        ['heavy', 128],
      ],
    );
    assert.deepEqual(
      healthyEndpoints(endpoints, target(true)).map((e) => e.id),
      ['passing', 'unknown', 'heavy'],
    );
  });
});

describe('upstream identity (the SPIFFE ID a target presents, found in the DER of its certificate)', () => {
  const td = '11111111-2222-3333-4444-555555555555.consul';
  const target = (service: string, extra: Partial<Target> = {}): Target => ({ id: 'x', kind: 'service', service, namespace: 'default', partition: 'default', datacenter: 'dc1', ...extra });
  const der = (pem: string): string => new X509Certificate(pem).raw.toString('hex').toUpperCase();

  test("the target's service, whatever its subset; the partition only when not default", () => {
    assert.equal(targetIdentity(target('api', { id: 'v2.api.default.default.dc1' }), td), `spiffe://${td}/ns/default/dc/dc1/svc/api`);
    assert.equal(targetIdentity(target('api', { partition: 'team', namespace: 'ns1', datacenter: 'dc2' }), td), `spiffe://${td}/ap/team/ns/ns1/dc/dc2/svc/api`);
  });

  test("api's leaf carries api's identity and not web's; a URI that only starts the same does not match", () => {
    assert.ok(der(PEM.apiCert).includes(uriSanDerHex(targetIdentity(target('api'), td))));
    assert.ok(!der(PEM.webCert).includes(uriSanDerHex(targetIdentity(target('api'), td))));
    assert.ok(!der(PEM.apiCert).includes(uriSanDerHex(targetIdentity(target('ap'), td))), 'svc/ap is a prefix of svc/api');
    assert.ok(!der(PEM.apiCert).includes(uriSanDerHex(`spiffe://${td}`)), "the CA's URI is not in the leaf");
  });

  test('lengths of 128 bytes and more take the long DER form', () => {
    assert.equal(uriSanDerHex('a'.repeat(127)).slice(0, 4), '867F');
    assert.equal(uriSanDerHex('a'.repeat(200)).slice(0, 6), '8681C8');
  });
});
