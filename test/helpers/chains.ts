/**
 * Compiled discovery chains as Consul 1.16.2 answers them (L7.md §1.3), for tests of the routes
 * they carry.
 */
export type Json = Record<string, unknown>;
const TD = '579a1c54-d4d8-bb81-7fd2-7956ea92f67a.consul';

function target(id: string, service: string, extra: Json = {}): Json {
  return { ID: id, Service: service, Namespace: 'default', Partition: 'default', Datacenter: 'dc1', MeshGateway: {}, Subset: {}, ConnectTimeout: '5s', SNI: `${id}.internal.${TD}`, ...extra };
}

const resolver = (id: string, extra: Json = {}): Json => ({ Type: 'resolver', Name: id, Resolver: { ConnectTimeout: '5s', Target: id, ...extra } });

/** The chain of L7.md §1.3: router (admin route, query route, catch-all) → splitter 90/10 → resolvers. */
export function routedChainJson(overrides: { routes?: Json[]; splits?: Json[] } = {}): Json {
  const routes = overrides.routes ?? [
    {
      Definition: {
        Match: { HTTP: { PathPrefix: '/admin', Header: [{ Name: 'X-Debug', Exact: '1', Invert: true }], Methods: ['GET', 'POST'] } },
        Destination: {
          RequestTimeout: '2s',
          ServiceSubset: 'v2',
          PrefixRewrite: '/',
          NumRetries: 3,
          RetryOn: ['5xx', 'reset'],
          RetryOnStatusCodes: [503],
          ResponseHeaders: { Add: { 'x-route': 'admin' }, Remove: ['server'] },
        },
      },
      NextNode: 'resolver:v2.api.default.default.dc1',
    },
    { Definition: { Match: { HTTP: { QueryParam: [{ Name: 'v', Exact: '2' }] } }, Destination: { Service: 'api-v2', RetryOnConnectFailure: true } }, NextNode: 'resolver:api-v2.default.default.dc1' },
    { Definition: { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: 'api', Namespace: 'default', Partition: 'default' } }, NextNode: 'splitter:api.default.default' },
  ];
  const splits = overrides.splits ?? [
    { Definition: { Weight: 90, ServiceSubset: 'v1' }, Weight: 90, NextNode: 'resolver:v1.api.default.default.dc1' },
    { Definition: { Weight: 10, ServiceSubset: 'v2', RequestHeaders: { Set: { 'x-canary': '1' } } }, Weight: 10, NextNode: 'resolver:v2.api.default.default.dc1' },
  ];
  return {
    Chain: {
      ServiceName: 'api',
      Namespace: 'default',
      Datacenter: 'dc1',
      Protocol: 'http',
      StartNode: 'router:api.default.default',
      Nodes: {
        'router:api.default.default': { Type: 'router', Name: 'api.default.default', Routes: routes },
        'splitter:api.default.default': { Type: 'splitter', Name: 'api.default.default', Splits: splits },
        'resolver:v1.api.default.default.dc1': resolver('v1.api.default.default.dc1', { RequestTimeout: 10_000_000_000, Failover: { Targets: ['api-backup.default.default.dc1'] } }),
        'resolver:v2.api.default.default.dc1': resolver('v2.api.default.default.dc1'),
        'resolver:api-v2.default.default.dc1': resolver('api-v2.default.default.dc1'),
      },
      Targets: {
        'v1.api.default.default.dc1': target('v1.api.default.default.dc1', 'api', { ServiceSubset: 'v1', Subset: { Filter: 'Service.Meta.version == v1' } }),
        'v2.api.default.default.dc1': target('v2.api.default.default.dc1', 'api', { ServiceSubset: 'v2', Subset: { Filter: 'Service.Meta.version == v2', OnlyPassing: true } }),
        'api-v2.default.default.dc1': target('api-v2.default.default.dc1', 'api-v2'),
        'api-backup.default.default.dc1': target('api-backup.default.default.dc1', 'api-backup'),
      },
    },
  };
}
