/**
 * Upstream `limits` and `passive_health_check`: parsing both spellings the agent serves, bad
 * fields falling back to their defaults with a reason, and the translation into the backend's
 * circuit breaker and the servers' ejection options (also on `add server`).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseUpstreamLimits } from '../../src/consul/upstream-limits.js';
import { parseProxyRegistration } from '../../src/consul/registration.js';
import { agentServiceSchema } from '../../src/consul/schemas.js';
import { DEFAULT_PASSIVE_HEALTH_CHECK, DEFAULT_UPSTREAM_LIMITS } from '../../src/domain/upstream-limits.js';
import { MIN_EJECTION_MS, backendLimits, maxActiveOf, passiveHealthOf } from '../../src/translate/limits.js';
import { serverSpec } from '../../src/haproxy/server-line.js';
import { opCommands } from '../../src/haproxy/runtime-ops.js';
import { render } from '../../src/haproxy/render.js';
import { translate } from '../../src/translate/translate.js';
import type { Backend } from '../../src/haproxy/model.js';
import type { Protocol } from '../../src/domain/snapshot.js';
import { endpoint, snapshot, upstream } from '../helpers/fixtures.js';

const CHECK = { intervalMs: 1_000, maxFailures: 3, enforcingConsecutive5xx: 100, maxEjectionPercent: 10, baseEjectionTimeMs: 2_500 };

describe('parseUpstreamLimits', () => {
  test('nothing configured: no limits, no passive health, no problems', () => {
    assert.deepEqual(parseUpstreamLimits({ protocol: 'http' }), { problems: [] });
  });

  test('a registration Config in snake_case (durations as Go strings)', () => {
    const parsed = parseUpstreamLimits({
      limits: { max_connections: 3, max_pending_requests: '4', max_concurrent_requests: 5 },
      passive_health_check: { interval: '2s', max_failures: 3, enforcing_consecutive_5xx: 50, max_ejection_percent: 20, base_ejection_time: '1m30s' },
    });
    assert.deepEqual(parsed, {
      limits: { maxConnections: 3, maxPendingRequests: 4, maxConcurrentRequests: 5 },
      passiveHealthCheck: { intervalMs: 2_000, maxFailures: 3, enforcingConsecutive5xx: 50, maxEjectionPercent: 20, baseEjectionTimeMs: 90_000 },
      problems: [],
    });
  });

  test('service-defaults UpstreamConfig as the agent merges it (Go names, nanoseconds; measured on 1.16.2)', () => {
    const parsed = parseUpstreamLimits({
      limits: { MaxConnections: 3, MaxPendingRequests: 4 },
      passive_health_check: { Interval: 2_000_000_000, MaxFailures: 3, EnforcingConsecutive5xx: 100, MaxEjectionPercent: 50, BaseEjectionTime: 5_000_000_000 },
    });
    assert.deepEqual(parsed, {
      limits: { maxConnections: 3, maxPendingRequests: 4, maxConcurrentRequests: 1024 },
      passiveHealthCheck: { intervalMs: 2_000, maxFailures: 3, enforcingConsecutive5xx: 100, maxEjectionPercent: 50, baseEjectionTimeMs: 5_000 },
      problems: [],
    });
  });

  test('an empty block means the defaults (Envoy: `passive_health_check {}` turns outlier detection on)', () => {
    assert.deepEqual(parseUpstreamLimits({ limits: {}, passive_health_check: {} }), { limits: DEFAULT_UPSTREAM_LIMITS, passiveHealthCheck: DEFAULT_PASSIVE_HEALTH_CHECK, problems: [] });
  });

  test('interval and max_failures 0 mean the defaults, as Consul leaves zeros unset for Envoy', () => {
    const parsed = parseUpstreamLimits({ passive_health_check: { interval: 0, max_failures: 0, enforcing_consecutive_5xx: 0 } });
    assert.deepEqual(parsed.passiveHealthCheck, { ...DEFAULT_PASSIVE_HEALTH_CHECK, enforcingConsecutive5xx: 0 });
  });

  const bad: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['a string', { limits: { max_connections: 'three' } }, 'limits.max_connections', /'three' is not a number; using the default 1024/],
    ['a negative number', { limits: { max_pending_requests: -1 } }, 'limits.max_pending_requests', /-1 is out of range \(0\.\.4294967295\); using the default 1024/],
    ['a fraction', { limits: { max_concurrent_requests: 2.5 } }, 'limits.max_concurrent_requests', /2\.5 is not a whole number; using the default 1024/],
    ['a boolean', { limits: { MaxConnections: true } }, 'limits.MaxConnections', /true is not a number/],
    ['a percentage over 100', { passive_health_check: { max_ejection_percent: 150 } }, 'passive_health_check.max_ejection_percent', /150 is out of range \(0\.\.100\); using the default 10/],
    ['a bad duration', { passive_health_check: { base_ejection_time: 'soon' } }, 'passive_health_check.base_ejection_time', /'soon' is not a duration .*; using the default 30s/],
    ['a negative duration', { passive_health_check: { Interval: -5 } }, 'passive_health_check.Interval', /-5 is negative; using the default 10s/],
  ];
  for (const [what, config, field, reason] of bad) {
    test(`${what}: the field falls back to its default, the others apply, and the problem names the value`, () => {
      const parsed = parseUpstreamLimits({ ...config, protocol: 'http' });
      assert.equal(parsed.problems.length, 1);
      assert.equal(parsed.problems[0]?.field, field);
      assert.match(parsed.problems[0]?.reason ?? '', reason);
      assert.match(parsed.problems[0]?.reason ?? '', new RegExp(`^Config\\.${field.replace('.', '\\.')} `));
      if (parsed.limits !== undefined) assert.deepEqual(parsed.limits, DEFAULT_UPSTREAM_LIMITS);
      if (parsed.passiveHealthCheck !== undefined) assert.deepEqual(parsed.passiveHealthCheck, DEFAULT_PASSIVE_HEALTH_CHECK);
    });
  }

  test('a block that is not an object: its defaults, and a problem', () => {
    const parsed = parseUpstreamLimits({ limits: 3, passive_health_check: 'on' });
    assert.deepEqual(parsed.limits, DEFAULT_UPSTREAM_LIMITS);
    assert.deepEqual(parsed.passiveHealthCheck, DEFAULT_PASSIVE_HEALTH_CHECK);
    assert.deepEqual(
      parsed.problems.map((p) => p.reason),
      ['Config.limits 3 is not an object; using the defaults', "Config.passive_health_check 'on' is not an object; using the defaults"],
    );
  });

  test('null blocks and fields count as absent', () => {
    assert.deepEqual(parseUpstreamLimits({ limits: null, passive_health_check: { max_failures: null } }), { passiveHealthCheck: DEFAULT_PASSIVE_HEALTH_CHECK, problems: [] });
  });
});

describe('registration: a bad limit keeps the upstream', () => {
  test('the upstream stays with its other settings; the bad field is reported as a setting naming the value and the upstream', () => {
    const registration = parseProxyRegistration(
      agentServiceSchema.parse({
        Kind: 'connect-proxy',
        ID: 'web-sidecar-proxy',
        Service: 'web-sidecar-proxy',
        Address: '',
        Port: 21000,
        Proxy: {
          DestinationServiceName: 'web',
          DestinationServiceID: 'web',
          LocalServicePort: 8080,
          Config: {},
          Upstreams: [
            {
              DestinationName: 'api',
              LocalBindPort: 9191,
              Config: { protocol: 'http', connect_timeout_ms: 250, limits: { max_connections: 'three', max_pending_requests: 7 }, passive_health_check: { max_failures: 2 } },
            },
          ],
        },
      }),
    );
    const [api] = registration.upstreams;
    assert.equal(api?.protocol, 'http');
    assert.equal(api?.connectTimeoutMs, 250);
    assert.deepEqual(api?.limits, { maxConnections: 1024, maxPendingRequests: 7, maxConcurrentRequests: 1024 });
    assert.equal(api?.passiveHealthCheck?.maxFailures, 2);
    assert.deepEqual(registration.droppedUpstreams, [
      {
        kind: 'setting',
        item: 'Upstreams[0] limits.max_connections',
        reason: "proxy 'web-sidecar-proxy': Upstreams[0] (service:default/api@) Config.limits.max_connections 'three' is not a number; using the default 1024",
      },
    ]);
  });
});

describe('translate: limits and passive health of an upstream', () => {
  const limits = { maxConnections: 3, maxPendingRequests: 4, maxConcurrentRequests: 5 };
  const cases: Array<[Protocol, number]> = [
    ['tcp', 3],
    ['http', 3],
    ['http2', 5],
    ['grpc', 5],
  ];
  for (const [protocol, expected] of cases) {
    test(`${protocol}: the backend takes ${expected} streams at once`, () => {
      assert.equal(maxActiveOf(upstream('api', { protocol, limits })), expected);
    });
  }

  test("nothing configured: Envoy's 1024 and no ejection", () => {
    assert.deepEqual(backendLimits(upstream('api')), { maxActive: 1024 });
  });

  test('passive health: layer7 for HTTP, layer4 for TCP; none when enforcing is 0; a floor on the ejection time', () => {
    assert.deepEqual(passiveHealthOf(upstream('api', { protocol: 'http', passiveHealthCheck: CHECK })), { observe: 'layer7', errorLimit: 3, ejectMs: 2_500 });
    assert.deepEqual(passiveHealthOf(upstream('db', { passiveHealthCheck: CHECK })), { observe: 'layer4', errorLimit: 3, ejectMs: 2_500 });
    assert.equal(passiveHealthOf(upstream('api', { passiveHealthCheck: { ...CHECK, enforcingConsecutive5xx: 0 } })), undefined);
    assert.equal(passiveHealthOf(upstream('api', { passiveHealthCheck: { ...CHECK, baseEjectionTimeMs: 0 } }))?.ejectMs, MIN_EJECTION_MS);
    // HAProxy reads error-limit as a signed int (4294967295 is refused).
    assert.equal(passiveHealthOf(upstream('api', { passiveHealthCheck: { ...CHECK, maxFailures: 4_294_967_295 } }))?.errorLimit, 2_147_483_647);
  });

  test('every target backend of the upstream gets them, and the rendered config carries them', () => {
    const api = upstream('api', { localBindPort: 9191, protocol: 'http', limits, passiveHealthCheck: CHECK });
    const model = translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1')]]] }), { runDir: '/run/hc' }).model;
    const backend = model.backends.find((b) => b.tls !== undefined) as Backend;
    assert.equal(backend.maxActive, 3);
    const text = render(model);
    assert.match(text, /http-request return status 503 hdr x-envoy-overloaded true if \{ be_conn gt 3 \}/);
    assert.match(text, / check observe layer7 error-limit 3 on-error mark-down inter 1h fastinter 2500ms downinter 2500ms rise 1\n/);
  });
});

describe('runtime: a server with passive health added through the runtime API', () => {
  const base: Backend = {
    name: 'b',
    mode: 'http',
    balance: 'roundrobin',
    timeoutConnectMs: 5_000,
    timeoutServerMs: 15_000,
    httpReuse: 'always',
    tls: { crt: 'leaf.pem', caFile: 'roots.pem', alpn: undefined },
    protoH2: false,
    servers: [],
  };
  const server = { name: 's1', address: '10.0.0.1', port: 21000, weight: 1 };

  test('gets the same options as the file line, and its checks are enabled', () => {
    const backend: Backend = { ...base, passiveHealth: { observe: 'layer7', errorLimit: 5, ejectMs: 30_000 } };
    const spec = serverSpec(server, backend);
    assert.match(spec, / check observe layer7 error-limit 5 on-error mark-down inter 1h fastinter 30s downinter 30s rise 1$/);
    const lines = opCommands({ kind: 'add-server', backend: 'b', server, spec }).map((c) => c.line);
    assert.deepEqual(lines, [`add server b/${spec}`, 'enable server b/s1', 'enable health b/s1']);
  });

  test('without passive health: no checks to enable', () => {
    const spec = serverSpec(server, base);
    assert.doesNotMatch(spec, /check/);
    assert.deepEqual(
      opCommands({ kind: 'add-server', backend: 'b', server, spec }).map((c) => c.line),
      [`add server b/${spec}`, 'enable server b/s1'],
    );
  });
});
