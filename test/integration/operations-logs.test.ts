/**
 * Logs end to end, real Consul dev agent (ACLs on) and real HAProxy: access logs from a
 * proxy-defaults `AccessLogs` entry for an HTTP and a TCP upstream and for the public listeners,
 * a listener-level line (TLS handshake without a client certificate), HAProxy's own messages as
 * component `haproxy`, a change of AccessLogs (reload, file sink, custom JSON format), the text
 * log format, and no ACL token or private key anywhere in the output.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, startTcpEcho, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { tcpExchange } from '../../devtools/probes.js';
import { SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';

const TOKEN = '5d3c2b1a-9e8f-4a7b-8c6d-0e1f2a3b4c5d';
/** A user agent with characters the log path must escape and restore exactly. */
const USER_AGENT = 'probe/1.0 "quoted" back\\slash\ttab';

let agent: ConsulDevAgent;
let baseDir: string;
let tokenFile: string;
let trustDomain: string;
let ports: Record<'api' | 'apiSidecar' | 'echo' | 'echoSidecar' | 'web' | 'webSidecar' | 'webToApi' | 'webToEcho', number>;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let web: SidecarProcess;
let api: SidecarProcess;
let echo: SidecarProcess;

type Line = Record<string, unknown>;
const accessLines = (sidecar: SidecarProcess): Line[] => sidecar.logs.filter((l) => 'upstream_cluster' in l);
const rawLines = (sidecar: SidecarProcess): string[] => sidecar.logs.flatMap((l) => (typeof l.raw === 'string' ? [l.raw] : []));

async function proxyDefaults(accessLogs: Record<string, unknown>): Promise<void> {
  await agent.put('/v1/config', { Kind: 'proxy-defaults', Name: 'global', AccessLogs: accessLogs });
}

/** GET through a local listener with our own headers. */
function get(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

async function waitForLine(sidecar: SidecarProcess, what: string, match: (l: Line) => boolean): Promise<Line> {
  return waitFor(what, async () => sidecar.logs.find(match), 30_000, 50);
}

before(async () => {
  agent = await ConsulDevAgent.start({
    token: TOKEN,
    extraConfig: `acl { enabled = true, default_policy = "allow", tokens { initial_management = "${TOKEN}", agent = "${TOKEN}" } }`,
  });
  baseDir = await mkdtemp(join(tmpdir(), 'hc-logs-'));
  tokenFile = join(baseDir, 'token');
  await writeFile(tokenFile, TOKEN, { mode: 0o600 });
  const names = ['api', 'apiSidecar', 'echo', 'echoSidecar', 'web', 'webSidecar', 'webToApi', 'webToEcho'] as const;
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number])) as typeof ports;
  apps.push(await startHttpApp('api', ports.api), await startTcpEcho('echo', ports.echo));

  await proxyDefaults({ Enabled: true });
  await registerMeshService(agent, { id: 'api', name: 'api', port: ports.api, sidecarPort: ports.apiSidecar, protocol: 'http', ttlCheck: true });
  await registerMeshService(agent, { id: 'echo', name: 'echo', port: ports.echo, sidecarPort: ports.echoSidecar });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web,
    sidecarPort: ports.webSidecar,
    protocol: 'http',
    upstreams: [
      { destinationName: 'api', localBindPort: ports.webToApi, protocol: 'http' },
      { destinationName: 'echo', localBindPort: ports.webToEcho },
    ],
  });
  // The agent merges proxy-defaults into the registrations asynchronously.
  for (const id of ['api', 'echo', 'web']) {
    await waitFor(
      `AccessLogs merged into ${id}-sidecar-proxy`,
      async () => {
        const svc = await agent.get<{ Proxy?: { AccessLogs?: { Enabled?: boolean } } }>(`/v1/agent/service/${id}-sidecar-proxy`);
        return svc.Proxy?.AccessLogs?.Enabled === true ? true : undefined;
      },
      30_000,
      100,
    );
  }
  trustDomain = (await agent.get<{ TrustDomain: string }>('/v1/agent/connect/ca/roots')).TrustDomain;

  const tokenArgs = ['-token-file', tokenFile];
  [api, web] = await Promise.all([startReadySidecar(sidecars, 'api', agent.httpAddr, baseDir, tokenArgs), startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir, tokenArgs)]);
  echo = new SidecarProcess(['-sidecar-for', 'echo', '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', baseDir, '-log-level', 'debug', '-log-format', 'text', ...tokenArgs]);
  sidecars.push(echo);
  await waitFor(
    `the text-format sidecar to be ready (stderr: ${echo.stderr.slice(-300)})`,
    async () => {
      if (echo.process.exitCode !== null) throw new Error(`echo sidecar exited: ${echo.stderr}`);
      return rawLines(echo).some((l) => / INFO {2}main: sidecar ready /.test(l)) ? true : undefined;
    },
    60_000,
    100,
  );
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('logs with real Consul and HAProxy', () => {
  test('an HTTP upstream request: one JSON access line on the upstream and on the public listener', async () => {
    await waitFor(
      'api through the mesh',
      async () => {
        const res = await get(ports.webToApi, '/warmup', {});
        return res.status === 200 ? true : undefined;
      },
      30_000,
      200,
    );
    const res = await get(ports.webToApi, '/logs?x=1', { 'user-agent': USER_AGENT, 'x-request-id': 'req-42' });
    assert.equal(res.status, 200);

    const upstreamLine = await waitForLine(web, 'the upstream access line', (l) => l.request_id === 'req-42');
    assert.deepEqual(
      { ...upstreamLine, start_time: undefined, duration: undefined, upstream_local_address: undefined, downstream_remote_address: undefined, bytes_sent: undefined, bytes_received: undefined },
      {
        start_time: undefined,
        route_name: null,
        method: 'GET',
        path: '/logs?x=1',
        protocol: 'HTTP/1.1',
        response_code: 200,
        response_flags: '-',
        response_code_details: 'via_upstream',
        connection_termination_details: null,
        bytes_received: undefined,
        bytes_sent: undefined,
        duration: undefined,
        upstream_service_time: upstreamLine.upstream_service_time,
        x_forwarded_for: null,
        user_agent: USER_AGENT,
        request_id: 'req-42',
        authority: `127.0.0.1:${ports.webToApi}`,
        upstream_host: `127.0.0.1:${ports.apiSidecar}`,
        upstream_cluster: `api.default.dc1.internal.${trustDomain}`,
        upstream_local_address: undefined,
        downstream_local_address: `127.0.0.1:${ports.webToApi}`,
        downstream_remote_address: undefined,
        requested_server_name: null,
        upstream_transport_failure_reason: null,
      },
    );
    assert.match(String(upstreamLine.upstream_service_time), /^\d+$/);
    assert.equal(typeof upstreamLine.duration, 'number');
    assert.ok((upstreamLine.bytes_sent as number) > 0);
    assert.match(String(upstreamLine.upstream_local_address), /^127\.0\.0\.1:\d+$/);
    assert.match(String(upstreamLine.downstream_remote_address), /^127\.0\.0\.1:\d+$/);
    assert.ok(Math.abs(Date.parse(String(upstreamLine.start_time)) - Date.now()) < 60_000, `start_time ${String(upstreamLine.start_time)}`);

    const publicLine = await waitForLine(api, 'the public listener access line', (l) => l.request_id === 'req-42');
    assert.equal(publicLine.upstream_cluster, 'local_app');
    assert.equal(publicLine.upstream_host, `127.0.0.1:${ports.api}`);
    assert.equal(publicLine.user_agent, USER_AGENT);
    assert.equal(publicLine.path, '/logs?x=1');
    assert.equal(publicLine.response_code, 200);
  });

  test('a TCP upstream connection: one line per connection on both sides', async () => {
    const countBefore = accessLines(web).length;
    const { greeting, echo: answer } = await waitFor(
      'echo through the mesh',
      async () => {
        try {
          return await tcpExchange(ports.webToEcho, 'ping');
        } catch {
          return undefined;
        }
      },
      30_000,
      200,
    );
    assert.deepEqual([greeting, answer], ['echo', 'ping']);
    const line = await waitForLine(
      web,
      'the TCP upstream access line',
      (l) => l.upstream_cluster === `echo.default.dc1.internal.${trustDomain}` && accessLines(web).indexOf(l) >= countBefore && l.bytes_sent !== 0,
    );
    assert.equal(line.response_code, 0);
    assert.equal(line.protocol, '-');
    assert.equal(line.method, null);
    assert.equal(line.upstream_host, `127.0.0.1:${ports.echoSidecar}`);
    assert.equal(line.downstream_local_address, `127.0.0.1:${ports.webToEcho}`);
    assert.ok((line.bytes_received as number) >= 'ping\n'.length);
    assert.ok((line.bytes_sent as number) >= 'echo\nping\n'.length);

    const publicLine = await waitForLine(echo, 'the TCP public listener access line', (l) => l.upstream_cluster === 'local_app' && l.upstream_host === `127.0.0.1:${ports.echo}`);
    assert.equal(publicLine.response_code, 0);
  });

  test('a TLS handshake without a client certificate is a listener line', async () => {
    await new Promise<void>((resolve) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: ports.apiSidecar, rejectUnauthorized: false }, () => socket.write('GET / HTTP/1.1\r\n\r\n'));
      socket.on('data', () => {});
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
    });
    const line = await waitForLine(api, 'the listener line', (l) => typeof l.connection_termination_details === 'string' && /SSL handshake/.test(l.connection_termination_details));
    assert.equal(line.response_code, 0);
    assert.match(String(line.downstream_remote_address), /^127\.0\.0\.1:\d+$/);
  });

  test("HAProxy's own messages arrive as component haproxy with a mapped level", async () => {
    // An unhealthy api instance leaves web's upstream: HAProxy logs the server's state change.
    const seen = web.logs.length;
    await agent.put('/v1/agent/check/fail/api-ttl');
    const line = await waitForLine(web, 'the server state change from haproxy', (l) => web.logs.indexOf(l) >= seen && l.source === 'syslog' && /is going DOWN for maintenance/.test(String(l.msg)));
    assert.equal(line.component, 'haproxy');
    assert.equal(line.severity, 'alert');
    assert.equal(line.level, 'error');
    assert.equal(typeof line.pid, 'number');
    await agent.put('/v1/agent/check/pass/api-ttl');
    await waitFor('api healthy again', async () => ((await get(ports.webToApi, '/', {})).status === 200 ? true : undefined), 30_000, 200);
  });

  test('connections and requests denied by intentions are logged on the public listener', async () => {
    await agent.put('/v1/connect/intentions/exact?source=web&destination=echo', { SourceType: 'consul', Action: 'deny' });
    try {
      const seen = echo.logs.length;
      const webSeen = web.logs.length;
      await waitFor(
        'the denial to take effect',
        async () => {
          try {
            await tcpExchange(ports.webToEcho, 'denied?', 2_000);
            return undefined;
          } catch {
            return true;
          }
        },
        30_000,
        200,
      );
      // The echo app speaks first, so the denied client never sent a byte: logged all the same.
      // The line of a connection that never reached the app (sessions of earlier connections that
      // the new intention ends are logged too, with K and a server).
      const line = await waitForLine(
        echo,
        'the denied connection',
        (l) => echo.logs.indexOf(l) >= seen && l.upstream_cluster === 'local_app' && l.upstream_host === null && l.connection_termination_details !== null,
      );
      assert.match(String(line.connection_termination_details), /^P/, 'HAProxy: denied by the proxy');
      // On the calling side the refused connection just ends: logged with nothing sent either way.
      const upstreamLine = await waitForLine(
        web,
        'the denied connection on the upstream side',
        (l) => web.logs.indexOf(l) >= webSeen && l.upstream_cluster === `echo.default.dc1.internal.${trustDomain}`,
      );
      assert.equal(upstreamLine.bytes_sent, 0);
      assert.equal(upstreamLine.bytes_received, 0);
    } finally {
      await agent.fetch('/v1/connect/intentions/exact?source=web&destination=echo', { method: 'DELETE' });
    }

    // HTTP: each request is decided; a denied one is answered 403 by the public listener, as Envoy does.
    await agent.put('/v1/connect/intentions/exact?source=web&destination=api', { SourceType: 'consul', Action: 'deny' });
    try {
      const apiSeen = api.logs.length;
      await waitFor('the HTTP denial to take effect', async () => ((await get(ports.webToApi, '/denied', {})).status === 403 ? true : undefined), 30_000, 200);
      const httpLine = await waitForLine(api, 'the denied request', (l) => api.logs.indexOf(l) >= apiSeen && l.upstream_cluster === 'local_app' && l.response_code === 403);
      assert.equal(httpLine.upstream_host, null);
      assert.equal(httpLine.path, '/denied');
    } finally {
      await agent.fetch('/v1/connect/intentions/exact?source=web&destination=api', { method: 'DELETE' });
    }
    await waitFor('api allowed again', async () => ((await get(ports.webToApi, '/', {})).status === 200 ? true : undefined), 30_000, 200);
  });

  test('the text log format: one readable line per entry', () => {
    const lines = rawLines(echo);
    assert.ok(
      lines.some((l) => /^\d{4}-\d{2}-\d{2}T\S+Z INFO {2}main: starting sidecar .*proxyId=echo-sidecar-proxy/.test(l)),
      lines.slice(0, 5).join('\n'),
    );
    assert.ok(lines.some((l) => /^\S+Z INFO {2}reconcile: starting haproxy reasons=/.test(l)));
  });

  test('a change of AccessLogs reloads with a reason; Type file, a custom JSON format', async () => {
    const path = join(baseDir, 'access.log');
    await proxyDefaults({
      Enabled: true,
      DisableListenerLogs: true,
      Type: 'file',
      Path: path,
      JSONFormat: JSON.stringify({ ua: '%REQ(USER-AGENT)%', test: '%REQ(X-TEST):4%', code: '%RESPONSE_CODE%', epoch: '%START_TIME(%s)%', cluster: '%UPSTREAM_CLUSTER%', route: '%ROUTE_NAME%' }),
    });
    const reload = await waitForLine(
      web,
      'a reload for the access log',
      (l) => l.msg === 'reloading haproxy' && Array.isArray(l.reasons) && l.reasons.some((r) => /access log changed/.test(String(r))),
    );
    assert.ok(reload);
    const line = await waitFor(
      'a line in the access log file',
      async () => {
        await get(ports.webToApi, '/file', { 'user-agent': 'file-probe', 'x-test': 'abcdefgh' });
        const text = await readFile(path, 'utf8').catch(() => '');
        // The daemon applies the new format at once; HAProxy captures X-Test once its reload is done.
        return text
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as Line)
          .find((l) => l.ua === 'file-probe' && l.cluster !== 'local_app' && l.test !== null);
      },
      30_000,
      200,
    );
    assert.equal(line.test, 'abcd');
    assert.equal(line.code, 200);
    assert.match(String(line.epoch), /^\d{10}$/);
    assert.equal(line.route, null);
    assert.equal(line.cluster, `api.default.dc1.internal.${trustDomain}`);
  });

  test('no ACL token or private key in any output line', async () => {
    const keys = await Promise.all(['api', 'echo', 'web'].map((s) => agent.get<{ PrivateKeyPEM: string }>(`/v1/agent/connect/ca/leaf/${s}`)));
    const keyLines = keys.flatMap((k) => k.PrivateKeyPEM.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----')));
    assert.ok(keyLines.length > 0);
    for (const sidecar of sidecars) {
      const output = `${JSON.stringify(sidecar.logs)}\n${sidecar.stderr}`;
      assert.ok(sidecar.logs.length > 5, 'the sidecar produced output');
      assert.ok(!output.includes(TOKEN), 'the ACL token must not appear');
      assert.ok(!output.includes('PRIVATE KEY'), 'no PEM private key');
      for (const keyLine of keyLines) assert.ok(!output.includes(keyLine), 'no line of a leaf private key');
    }
  });
});
