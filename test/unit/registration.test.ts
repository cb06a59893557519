import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseProxyRegistration } from '../../src/consul/registration.js';
import { agentServiceSchema } from '../../src/consul/schemas.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import type { ProxyRegistration } from '../../src/domain/snapshot.js';

/** A minimal agent response, as JSON; overrides are merged shallowly (Proxy deeply one level). */
function agentJson(overrides: Record<string, unknown> = {}, proxy: Record<string, unknown> = {}): unknown {
  return {
    Kind: 'connect-proxy',
    ID: 'web-sidecar-proxy',
    Service: 'web-sidecar-proxy',
    Address: '',
    Port: 21000,
    ...overrides,
    Proxy: {
      DestinationServiceName: 'web',
      DestinationServiceID: 'web',
      LocalServicePort: 8080,
      Config: {},
      Upstreams: null,
      ...proxy,
    },
  };
}

function parse(json: unknown): ProxyRegistration {
  return parseProxyRegistration(agentServiceSchema.parse(json));
}

function upstream(over: Record<string, unknown>): Record<string, unknown> {
  return { DestinationName: 'db', LocalBindPort: 9191, ...over };
}

describe('parseProxyRegistration: defaults', () => {
  test('Consul defaults for a minimal registration', () => {
    const reg = parse(agentJson());
    assert.deepEqual(reg, {
      proxyId: 'web-sidecar-proxy',
      proxyName: 'web-sidecar-proxy',
      serviceName: 'web',
      serviceId: 'web',
      namespace: 'default',
      partition: 'default',
      publicListener: {
        bindAddress: '0.0.0.0',
        bindPort: 21000,
        protocol: 'tcp',
        localServiceAddress: '127.0.0.1',
        localServicePort: 8080,
        localConnectTimeoutMs: 5000,
        localRequestTimeoutMs: undefined,
      },
      upstreams: [],
    });
  });

  test('service Address is the bind address when Config.bind_address is absent', () => {
    assert.equal(parse(agentJson({ Address: '10.0.0.5' })).publicListener.bindAddress, '10.0.0.5');
  });

  test('Config overrides: bind_address, bind_port, protocol (case-insensitive), timeouts as numbers or strings', () => {
    const reg = parse(
      agentJson(
        { Address: '10.0.0.5', Namespace: 'team', Partition: 'p1' },
        {
          LocalServiceAddress: '127.0.0.2',
          Config: {
            bind_address: '192.168.1.1',
            bind_port: '21001',
            protocol: 'HTTP',
            local_connect_timeout_ms: 250,
            local_request_timeout_ms: '15000',
            unknown_key: { nested: true },
          },
        },
      ),
    );
    assert.deepEqual(reg.publicListener, {
      bindAddress: '192.168.1.1',
      bindPort: 21001,
      protocol: 'http',
      localServiceAddress: '127.0.0.2',
      localServicePort: 8080,
      localConnectTimeoutMs: 250,
      localRequestTimeoutMs: 15000,
    });
    assert.equal(reg.namespace, 'team');
    assert.equal(reg.partition, 'p1');
  });

  test('upstream defaults and key', () => {
    const reg = parse(agentJson({}, { Upstreams: [upstream({})] }));
    assert.deepEqual(reg.upstreams, [
      {
        key: 'service:default/db@',
        destinationType: 'service',
        destinationName: 'db',
        destinationNamespace: 'default',
        datacenter: '',
        localBindAddress: '127.0.0.1',
        localBindPort: 9191,
        localBindSocketPath: undefined,
        localBindSocketMode: undefined,
        protocol: 'tcp',
        connectTimeoutMs: 5000,
      },
    ]);
  });

  test('upstream fields: prepared query, namespace, datacenter, socket with octal mode, config', () => {
    const reg = parse(
      agentJson(
        {},
        {
          Upstreams: [
            upstream({ DestinationType: 'prepared_query', DestinationName: 'q', LocalBindPort: 9192 }),
            {
              DestinationName: 'api',
              DestinationNamespace: 'ns1',
              Datacenter: 'dc2',
              LocalBindSocketPath: '/run/api.sock',
              LocalBindSocketMode: '0600',
              Config: { protocol: 'grpc', connect_timeout_ms: '1000' },
            },
          ],
        },
      ),
    );
    assert.equal(reg.upstreams[0]?.key, 'prepared_query:default/q@');
    assert.deepEqual(reg.upstreams[1], {
      key: 'service:ns1/api@dc2',
      destinationType: 'service',
      destinationName: 'api',
      destinationNamespace: 'ns1',
      datacenter: 'dc2',
      localBindAddress: '127.0.0.1',
      localBindPort: 0,
      localBindSocketPath: '/run/api.sock',
      localBindSocketMode: 0o600,
      protocol: 'grpc',
      connectTimeoutMs: 1000,
      configuredConnectTimeoutMs: 1000,
    });
  });

  test('unknown fields anywhere are ignored', () => {
    const json = agentJson({ Weights: { Passing: 1 }, NewField: [1, 2] }, { Mode: 'transparent', Expose: {}, Upstreams: [upstream({ MeshGateway: { Mode: 'local' } })] });
    assert.equal(parse(json).upstreams.length, 1);
  });
});

const P = "proxy 'web-sidecar-proxy': ";

const errorCases: Array<{ name: string; json: unknown; message: string }> = [
  { name: 'kind', json: agentJson({ Kind: '' }), message: `${P}service kind '' is not 'connect-proxy'` },
  { name: 'kind mesh-gateway', json: agentJson({ Kind: 'mesh-gateway' }), message: `${P}service kind 'mesh-gateway' is not 'connect-proxy'` },
  {
    name: 'no proxy block',
    json: { Kind: 'connect-proxy', ID: 'web-sidecar-proxy', Service: 'x', Port: 1 },
    message: `${P}the registration has no Proxy block`,
  },
  { name: 'no destination', json: agentJson({}, { DestinationServiceName: '' }), message: `${P}Proxy.DestinationServiceName is empty` },
  {
    name: 'protocol',
    json: agentJson({}, { Config: { protocol: 'foo' } }),
    message: `${P}Config.protocol 'foo' is not one of tcp, http, http2, grpc`,
  },
  { name: 'protocol type', json: agentJson({}, { Config: { protocol: 7 } }), message: `${P}Config.protocol 7 is not a string` },
  { name: 'bind_port text', json: agentJson({}, { Config: { bind_port: 'abc' } }), message: `${P}Config.bind_port 'abc' is not a number` },
  { name: 'bind_port range', json: agentJson({}, { Config: { bind_port: 70000 } }), message: `${P}Config.bind_port 70000 is out of range (1..65535)` },
  { name: 'bind_port negative', json: agentJson({}, { Config: { bind_port: '-1' } }), message: `${P}Config.bind_port '-1' is out of range (1..65535)` },
  { name: 'bind_port fraction', json: agentJson({}, { Config: { bind_port: 1.5 } }), message: `${P}Config.bind_port 1.5 is not a whole number` },
  { name: 'bind_port bool', json: agentJson({}, { Config: { bind_port: true } }), message: `${P}Config.bind_port true is not a number` },
  { name: 'bind_address type', json: agentJson({}, { Config: { bind_address: 1 } }), message: `${P}Config.bind_address 1 is not a string` },
  { name: 'no port', json: agentJson({ Port: 0 }), message: `${P}neither Config.bind_port nor Port is set (Port 0)` },
  { name: 'Port range', json: agentJson({ Port: 70000 }), message: `${P}Port 70000 is out of range (1..65535)` },
  {
    name: 'local service port missing',
    json: agentJson({}, { LocalServicePort: 0 }),
    message: `${P}Proxy.LocalServicePort 0 must be set (1..65535)`,
  },
  {
    name: 'local service port range',
    json: agentJson({}, { LocalServicePort: 65536 }),
    message: `${P}Proxy.LocalServicePort 65536 is out of range (1..65535)`,
  },
  {
    name: 'connect timeout',
    json: agentJson({}, { Config: { local_connect_timeout_ms: 'soon' } }),
    message: `${P}Config.local_connect_timeout_ms 'soon' is not a number`,
  },
  {
    name: 'request timeout negative',
    json: agentJson({}, { Config: { local_request_timeout_ms: -5 } }),
    message: `${P}Config.local_request_timeout_ms -5 is out of range (0..9007199254740991)`,
  },
];

/** A bad upstream is left out and reported; the rest of the registration applies. */
const droppedUpstreamCases: Array<{ name: string; json: unknown; message: string }> = [
  {
    name: 'upstream type',
    json: agentJson({}, { Upstreams: [upstream({ DestinationType: 'peer' })] }),
    message: `${P}Upstreams[0].DestinationType 'peer' is not one of service, prepared_query`,
  },
  {
    name: 'upstream name',
    json: agentJson({}, { Upstreams: [upstream({ DestinationName: '' })] }),
    message: `${P}Upstreams[0].DestinationName is empty`,
  },
  {
    name: 'upstream neither port nor socket',
    json: agentJson({}, { Upstreams: [upstream({ LocalBindPort: 0 })] }),
    message: `${P}Upstreams[0] (service:default/db@) sets neither LocalBindPort nor LocalBindSocketPath; set exactly one`,
  },
  {
    name: 'upstream both port and socket',
    json: agentJson({}, { Upstreams: [upstream({ LocalBindSocketPath: '/s' })] }),
    message: `${P}Upstreams[0] (service:default/db@) sets both LocalBindPort 9191 and LocalBindSocketPath '/s'; set exactly one`,
  },
  {
    name: 'upstream port range',
    json: agentJson({}, { Upstreams: [upstream({ LocalBindPort: 99999 })] }),
    message: `${P}Upstreams[0] (service:default/db@) LocalBindPort 99999 is out of range (1..65535)`,
  },
  {
    name: 'upstream socket mode',
    json: agentJson({}, { Upstreams: [upstream({ LocalBindPort: 0, LocalBindSocketPath: '/s', LocalBindSocketMode: '0999' })] }),
    message: `${P}Upstreams[0] (service:default/db@) LocalBindSocketMode '0999' is not an octal file mode`,
  },
  {
    name: 'upstream protocol',
    json: agentJson({}, { Upstreams: [upstream({ Config: { protocol: 'udp' } })] }),
    message: `${P}Upstreams[0] (service:default/db@) Config.protocol 'udp' is not one of tcp, http, http2, grpc`,
  },
  {
    name: 'upstream connect timeout',
    json: agentJson({}, { Upstreams: [upstream({ Config: { connect_timeout_ms: '1e3' } })] }),
    message: `${P}Upstreams[0] (service:default/db@) Config.connect_timeout_ms '1e3' is not a number`,
  },
  {
    name: 'duplicate bind',
    json: agentJson({}, { Upstreams: [upstream({}), upstream({ DestinationName: 'cache' })] }),
    message: `${P}Upstreams[0] and Upstreams[1] both bind 127.0.0.1:9191; Upstreams[1] is left out`,
  },
  {
    name: 'duplicate socket',
    json: agentJson(
      {},
      {
        Upstreams: [upstream({ LocalBindPort: 0, LocalBindSocketPath: '/s' }), upstream({ DestinationName: 'cache', LocalBindPort: 0, LocalBindSocketPath: '/s' })],
      },
    ),
    message: `${P}Upstreams[0] and Upstreams[1] both bind unix:/s; Upstreams[1] is left out`,
  },
  {
    name: 'duplicate upstream',
    json: agentJson({}, { Upstreams: [upstream({}), upstream({ LocalBindPort: 9192 })] }),
    message: `${P}Upstreams[0] and Upstreams[1] are both service:default/db@; Upstreams[1] is left out`,
  },
];

describe('parseProxyRegistration: errors', () => {
  for (const c of errorCases) {
    test(c.name, () => {
      assert.throws(
        () => parse(c.json),
        (err: unknown) => {
          assert.ok(isHaproxyConnectError(err, 'PROXY_CONFIG_INVALID'), `wrong error: ${String(err)}`);
          assert.equal(err.message, c.message);
          return true;
        },
      );
    });
  }

  for (const c of droppedUpstreamCases) {
    test(`${c.name}: that upstream is left out, the rest applies`, () => {
      const reg = parse(c.json);
      assert.equal(reg.droppedUpstreams?.length, 1, JSON.stringify(reg.droppedUpstreams));
      assert.equal(reg.droppedUpstreams?.[0]?.kind, 'upstream');
      assert.equal(reg.droppedUpstreams?.[0]?.reason, c.message);
      const total = (c.json as { Proxy: { Upstreams: unknown[] } }).Proxy.Upstreams.length;
      assert.equal(reg.upstreams.length, total - 1);
    });
  }

  test('same port on different addresses is allowed', () => {
    const reg = parse(agentJson({}, { Upstreams: [upstream({}), upstream({ DestinationName: 'cache', LocalBindAddress: '127.0.0.2' })] }));
    assert.equal(reg.upstreams.length, 2);
  });
});
