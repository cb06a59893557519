/**
 * Bad input at start-up, with the real CLI, a real Consul dev agent (one with ACLs on and default
 * deny) and real HAProxy: each case exits non-zero with one clear line naming the value.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePort, freePorts } from '../../devtools/ports.js';
import { SidecarProcess } from '../../devtools/sidecar.js';

const ROOT_TOKEN = '8f2e1a4c-3b5d-4e6f-9a7b-1c2d3e4f5a6b';
let agent: ConsulDevAgent;
let aclAgent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const started: SidecarProcess[] = [];

function cli(args: string[], env: Record<string, string | undefined> = {}): SidecarProcess {
  const sidecar = new SidecarProcess(args, { CONSUL_HTTP_ADDR: undefined, CONSUL_HTTP_TOKEN: undefined, ...env });
  started.push(sidecar);
  return sidecar;
}

async function failsWith(args: string[], pattern: RegExp, wantCode = 1, env: Record<string, string | undefined> = {}): Promise<string> {
  const sidecar = cli(args, env);
  const { code } = await sidecar.exited;
  const lines = sidecar.stderr.trim().split('\n');
  assert.equal(code, wantCode, `exit code; stderr: ${sidecar.stderr}`);
  assert.equal(lines.length, 1, `one line on stderr, got: ${sidecar.stderr}`);
  assert.match(lines[0] as string, pattern);
  return sidecar.stderr;
}

before(async () => {
  baseDir = await mkdtemp(join(tmpdir(), 'hc-cli-'));
  [agent, aclAgent] = await Promise.all([
    ConsulDevAgent.start(),
    ConsulDevAgent.start({
      token: ROOT_TOKEN,
      extraConfig: `acl { enabled = true, default_policy = "deny", tokens { initial_management = "${ROOT_TOKEN}", agent = "${ROOT_TOKEN}" } }`,
    }),
  ]);
  const [app, sidecarPort, badPort, aclApp, aclSidecar] = (await freePorts(5)) as [number, number, number, number, number];
  apps.push(await startHttpApp('app', app));
  await registerMeshService(agent, { id: 'app', name: 'app', port: app, sidecarPort });
  await agent.put('/v1/agent/service/register', { ID: 'plain', Name: 'plain', Port: app });
  await agent.put('/v1/agent/service/register', {
    ID: 'bad',
    Name: 'bad',
    Port: app,
    Connect: { SidecarService: { Port: badPort, Proxy: { Config: { local_connect_timeout_ms: 'soon' } } } },
  });
  await registerMeshService(aclAgent, { id: 'secure', name: 'secure', port: aclApp, sidecarPort: aclSidecar });
});

after(async () => {
  await Promise.all(started.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all([agent?.stop(), aclAgent?.stop()]);
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('start-up errors name the value', () => {
  test('an unknown service id', async () => {
    await failsWith(['-sidecar-for', 'nope', '-http-addr', agent.httpAddr], new RegExp(`service 'nope' has no connect-proxy registered on agent http://${agent.httpAddr}`));
  });

  test('a service with no sidecar', async () => {
    await failsWith(['-sidecar-for', 'plain', '-http-addr', agent.httpAddr], /service 'plain' has no connect-proxy registered/);
  });

  test('an unreachable Consul agent', async () => {
    const port = await freePort();
    await failsWith(['-sidecar-for', 'app'], new RegExp(`127\\.0\\.0\\.1:${port}`), 1, { CONSUL_HTTP_ADDR: `127.0.0.1:${port}` });
  });

  test('a proxy config value of the wrong type', async () => {
    await failsWith(['-sidecar-for', 'bad', '-http-addr', agent.httpAddr], /local_connect_timeout_ms.*'soon'/);
  });

  test('a missing haproxy binary', async () => {
    await failsWith(['-sidecar-for', 'app', '-http-addr', agent.httpAddr, '-haproxy', '/nonexistent/haproxy'], /\/nonexistent\/haproxy/);
  });

  for (const [what, sub] of [
    ['a space', 'with space'],
    ['a path too long for a unix socket', 'x'.repeat(90)],
  ] as const) {
    test(`a -haproxy-cfg-base-path with ${what}: exit 1 at start, nothing left behind`, async () => {
      const base = join(baseDir, sub);
      await mkdir(base, { recursive: true });
      await failsWith(['-sidecar-for', 'app', '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', base], /-haproxy-cfg-base-path '.*' cannot hold HAProxy's run directory: /);
      assert.deepEqual(
        (await readdir(base)).filter((f) => f.startsWith('haproxy-connect-')),
        [],
      );
    });
  }

  test('an invalid flag value exits 2', async () => {
    await failsWith(['-sidecar-for', 'app', '-log-level', 'loud'], /'loud' for -log-level/, 2);
  });

  test('a rejected ACL token, never printed', async () => {
    const bogus = '00000000-1111-2222-3333-444444444444';
    const stderr = await failsWith(['-sidecar-for', 'secure', '-http-addr', aclAgent.httpAddr, '-token', bogus], /token/i);
    assert.ok(!stderr.includes(bogus), 'the token must not be printed');
  });

  test('a valid ACL token from a file starts the sidecar', async () => {
    const tokenFile = join(baseDir, 'token');
    await writeFile(tokenFile, ROOT_TOKEN, { mode: 0o600 });
    const sidecar = cli(['-sidecar-for', 'secure', '-http-addr', aclAgent.httpAddr, '-token-file', tokenFile, '-haproxy-cfg-base-path', baseDir]);
    await sidecar.waitForLog('sidecar ready');
    const { code } = await sidecar.stop();
    assert.equal(code, 0);
    assert.ok(!JSON.stringify(sidecar.logs).includes(ROOT_TOKEN), 'the token must not be logged');
  });
});
