/**
 * Access logs through the configuration path: Proxy.AccessLogs from the agent (validated as
 * Consul validates proxy-defaults), the model translate builds from it, the reload the planner
 * asks for, and the -log-format flag.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { parseProxyRegistration } from '../../src/consul/registration.js';
import { agentServiceSchema } from '../../src/consul/schemas.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { plan } from '../../src/haproxy/plan.js';
import { render } from '../../src/haproxy/render.js';
import type { AccessLogs, ProxyRegistration } from '../../src/domain/snapshot.js';
import { defaultAccessLogFormat, parseJsonFormat } from '../../src/domain/access-log-template.js';
import { translate } from '../../src/translate/translate.js';
import { endpoint, snapshot, upstream } from '../helpers/fixtures.js';

function parse(accessLogs: unknown): ProxyRegistration {
  return parseProxyRegistration(
    agentServiceSchema.parse({
      Kind: 'connect-proxy',
      ID: 'web-sidecar-proxy',
      Service: 'web-sidecar-proxy',
      Port: 21000,
      Proxy: { DestinationServiceName: 'web', LocalServicePort: 8080, AccessLogs: accessLogs },
    }),
  );
}

function rejects(accessLogs: unknown, message: RegExp): void {
  assert.throws(
    () => parse(accessLogs),
    (err: unknown) => isHaproxyConnectError(err, 'PROXY_CONFIG_INVALID') && message.test(err.message),
    JSON.stringify(accessLogs),
  );
}

describe('Proxy.AccessLogs', () => {
  test('absent (or null) → no access logs', () => {
    assert.equal(parse(undefined).accessLogs, undefined);
    assert.equal(parse(null).accessLogs, undefined);
  });

  test("Consul's defaults: stdout, the default JSON format, listener logs on", () => {
    assert.deepEqual(parse({ Enabled: true }).accessLogs, {
      enabled: true,
      disableListenerLogs: false,
      sink: { type: 'stdout' },
      format: defaultAccessLogFormat(),
    });
  });

  test('every field, unknown fields ignored', () => {
    const logs = parse({ Enabled: true, DisableListenerLogs: true, Type: 'file', Path: '/var/log/a.log', TextFormat: '%START_TIME% x', FutureField: 1 }).accessLogs;
    assert.equal(logs?.disableListenerLogs, true);
    assert.deepEqual(logs?.sink, { type: 'file', path: '/var/log/a.log' });
    assert.equal(logs?.format.kind, 'text');
    assert.equal(parse({ Type: 'stderr', JSONFormat: '{"a":"%DURATION%"}' }).accessLogs?.format.kind, 'json');
  });

  test('wrong values are errors naming the field and the value', () => {
    rejects({ Enabled: 'yes' }, /AccessLogs\.Enabled 'yes' is not a boolean/);
    rejects({ Type: 'syslog' }, /AccessLogs\.Type 'syslog' is not one of stdout, stderr, file/);
    rejects({ Type: 'file' }, /AccessLogs\.Path must be set/);
    rejects({ Type: 'stdout', Path: '/x' }, /AccessLogs\.Path '\/x' is only valid with AccessLogs\.Type 'file'/);
    rejects({ JSONFormat: '{}', TextFormat: 'x' }, /both JSONFormat and TextFormat/);
    rejects({ JSONFormat: '{"a": ' }, /AccessLogs\.JSONFormat '\{"a": ' is not valid JSON/);
    rejects({ JSONFormat: '"%START_TIME%"' }, /AccessLogs\.JSONFormat .* must be a JSON object/);
    rejects({ Path: 7 }, /AccessLogs\.Path 7 is not a string/);
  });
});

describe('translate and render', () => {
  const api = upstream('api', { protocol: 'http', localBindPort: 9191 });
  const db = upstream('db', { localBindPort: 9192 });
  function model(accessLogs: AccessLogs | undefined) {
    return translate(
      snapshot({
        listener: { protocol: 'http' },
        upstreams: [api, db],
        endpoints: [
          [api.key, [endpoint('node-1', '10.0.0.1')]],
          [db.key, [endpoint('node-2', '10.0.0.2')]],
        ],
        ...(accessLogs !== undefined && { accessLogs }),
      }),
      { runDir: '/run/hc' },
    ).model;
  }
  const on: AccessLogs = { enabled: true, disableListenerLogs: false, sink: { type: 'stdout' }, format: defaultAccessLogFormat() };

  test('every frontend gets an access log; only HTTP ones capture headers', () => {
    const m = model(on);
    assert.deepEqual(
      m.frontends.map((f) => [f.name.replace(/_[0-9a-f]{8}$/, ''), f.accessLog?.cluster, f.accessLog?.requestHeaders.length]),
      [
        ['public_listener', 'local_app', 6],
        ['upstream_service_default_api', 'api.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul', 6],
        ['upstream_service_default_db', 'db.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul', 0],
      ],
    );
    assert.equal(m.global.logs?.socket, 'log.sock');
  });

  test('off or disabled: no access log lines in the config, HAProxy messages still go to the receiver', () => {
    for (const logs of [undefined, { ...on, enabled: false }]) {
      const cfg = render(model(logs));
      assert.doesNotMatch(cfg, /capture|log ring@haproxy_connect_logs len|no log\n {4}log ring/);
      // Every frontend keeps `log global` (defaults) and builds no traffic line: a log-format so that
      // HAProxy formats no `Connect from` line per stream, and dontlog-normal.
      for (const name of ['public_listener', 'upstream_service_default_api', 'upstream_service_default_db']) {
        const section = cfg.slice(cfg.indexOf(`frontend ${name}`));
        const body = section.slice(0, section.indexOf('\n\n'));
        assert.match(body, /\n {4}option dontlog-normal\n {4}log-format "%ci:%cp %ft %b\/%s %tsc"\n/, name);
      }
      assert.match(cfg, /defaults\n {4}log global\n/);
      assert.match(cfg, /log ring@haproxy_connect_logs local0 notice/);
      assert.match(cfg, /server receiver unix@\/run\/hc\/log\.sock log-proto octet-count/);
    }
  });

  test('a change of AccessLogs is a reload with a reason; a sink-only change is not', () => {
    const reasons = (before: AccessLogs | undefined, after: AccessLogs | undefined): string[] => {
      const p = plan(model(before), model(after));
      return p.kind === 'reload' ? p.reasons : [];
    };
    assert.ok(reasons(undefined, on).includes('frontend public_listener access log changed'));
    assert.ok(reasons(on, { ...on, format: parseJsonFormat('{"ua":"%REQ(USER-AGENT)%"}') }).some((r) => /^frontend upstream_service_default_api_\w+ access log changed$/.test(r)));
    assert.equal(plan(model(on), model({ ...on, sink: { type: 'stderr' }, disableListenerLogs: true })).kind, 'none', 'Type and DisableListenerLogs are applied by the daemon alone');
  });
});

describe('-log-format', () => {
  const base = ['-sidecar-for', 'web'];
  test('json by default, text on request, anything else refused', async () => {
    const run = async (argv: string[]) => {
      const r = await loadConfig({ argv: [...base, ...argv], env: {} });
      assert.equal(r.kind, 'run');
      return r.kind === 'run' ? r.config.logFormat : undefined;
    };
    assert.equal(await run([]), 'json');
    assert.equal(await run(['-log-format', 'text']), 'text');
    assert.equal(await run(['-log-format=JSON']), 'json');
    await assert.rejects(loadConfig({ argv: [...base, '-log-format', 'logfmt'], env: {} }), /invalid value 'logfmt' for -log-format: expected one of json, text/);
  });
});
