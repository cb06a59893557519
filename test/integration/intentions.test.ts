/**
 * Intentions enforcement end to end, with a real Consul dev agent and real HAProxy (its default
 * thread count, several on this machine): allow and deny, flips under traffic (convergence time
 * printed), open connections closed on deny, wildcard sources, the default policy with and without
 * ACLs, Consul paused for 30 s, and a certificate from a foreign CA.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, startTcpEcho, type RunningApp } from '../../devtools/apps.js';
import { foreignLeaf } from '../../devtools/certs.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet, tlsHttpProbe } from '../../devtools/probes.js';
import { type SidecarProcess, sidecarServing, startReadySidecar } from '../../devtools/sidecar.js';
import { Traffic } from '../../devtools/traffic.js';
import { RuntimeSession } from '../../src/driver/runtime-session.js';

const ROOT_TOKEN = '5e0c7a1d-2b3c-4d5e-8f90-a1b2c3d4e5f6';
/** Every probe has its own bound, so a hanging connection fails the test instead of stalling it. */
const PROBE_TIMEOUT_MS = 3_000;
const CONVERGENCE_LIMIT_MS = 10_000;
const CONSUL_PAUSE_MS = 30_000;

let agent: ConsulDevAgent;
let aclAgent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let ports: Record<string, number>;
let roots: string;
const leaves: Record<string, { CertPEM: string; PrivateKeyPEM: string }> = {};

const startSidecar = (service: string, consul: ConsulDevAgent, extra: string[] = []): Promise<SidecarProcess> => startReadySidecar(sidecars, service, consul.httpAddr, baseDir, extra);
const sidecarOf = (service: string): SidecarProcess => sidecarServing(sidecars, service);

async function setIntentions(consul: ConsulDevAgent, destination: string, sources: Array<{ name: string; action: 'allow' | 'deny' }>): Promise<void> {
  await consul.put('/v1/config', { Kind: 'service-intentions', Name: destination, Sources: sources.map((s) => ({ Name: s.name, Action: s.action })) });
}

async function clearIntentions(consul: ConsulDevAgent, destination: string): Promise<void> {
  const res = await consul.fetch(`/v1/config/service-intentions/${destination}`, { method: 'DELETE' });
  assert.ok(res.ok, `DELETE intentions of ${destination}: ${res.status}`);
}

/** A new mTLS connection to `service`'s public listener as `source`: 'allowed' or 'refused'. */
async function probe(port: number, source: string, ca = roots): Promise<'allowed' | 'refused'> {
  const leaf = leaves[source];
  assert.ok(leaf !== undefined, `no leaf for ${source}`);
  const answer = await tlsHttpProbe({ port, ca, cert: leaf.CertPEM, key: leaf.PrivateKeyPEM, timeoutMs: PROBE_TIMEOUT_MS });
  if (answer.startsWith('refused: timeout')) throw new Error(`probe of port ${port} as ${source} hung`);
  return answer.startsWith('HTTP/1.1 200') ? 'allowed' : 'refused';
}

/** A TCP connection through which `greeting` arrived (undefined if it closed or timed out first). */
function openGreeted(port: number, greeting: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, PROBE_TIMEOUT_MS);
    const onData = (d: Buffer): void => {
      received += d.toString();
      if (!received.includes(`${greeting}\n`)) return;
      clearTimeout(timer);
      socket.off('data', onData);
      resolve(socket);
    };
    socket.on('data', onData);
    socket.on('error', () => {});
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}

/** Polls new connections until `want`; returns the milliseconds since `since`. */
async function convergence(what: string, since: number, check: () => Promise<boolean>): Promise<number> {
  await waitFor(what, async () => ((await check()) ? true : undefined), CONVERGENCE_LIMIT_MS, 10);
  return Math.round(performance.now() - since);
}

before(async () => {
  baseDir = await mkdtemp(join(tmpdir(), 'hc-intentions-'));
  agent = await ConsulDevAgent.start();
  const names = ['api', 'apiSidecar', 'echo', 'echoSidecar', 'web', 'webSidecar', 'webToApi', 'webToEcho', 'batch', 'batchSidecar'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  apps.push(await startHttpApp('api', ports.api as number));
  apps.push(await startTcpEcho('echo', ports.echo as number));
  await registerMeshService(agent, { id: 'api', name: 'api', port: ports.api as number, sidecarPort: ports.apiSidecar as number, protocol: 'http' });
  await registerMeshService(agent, { id: 'echo', name: 'echo', port: ports.echo as number, sidecarPort: ports.echoSidecar as number });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web as number,
    sidecarPort: ports.webSidecar as number,
    protocol: 'http',
    upstreams: [
      { destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' },
      { destinationName: 'echo', localBindPort: ports.webToEcho as number },
    ],
  });
  await registerMeshService(agent, { id: 'batch', name: 'batch', port: ports.batch as number, sidecarPort: ports.batchSidecar as number });
  await setIntentions(agent, 'api', [{ name: 'web', action: 'allow' }]);
  await Promise.all(['api', 'echo', 'web'].map((s) => startSidecar(s, agent)));
  const rootsJson = await agent.get<{ Roots: Array<{ RootCert: string }> }>('/v1/agent/connect/ca/roots');
  roots = rootsJson.Roots.map((r) => r.RootCert).join('\n');
  for (const service of ['web', 'batch']) leaves[service] = await agent.get(`/v1/agent/connect/ca/leaf/${service}`);
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  if (agent?.process.signalCode === null) agent.process.kill('SIGCONT');
  await Promise.all([agent?.stop(), aclAgent?.stop()]);
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('intentions with real Consul and HAProxy', () => {
  test('allowed: a call through the mesh succeeds; a source without an allow is refused', async () => {
    const res = await waitFor(
      'web -> api',
      async () => {
        const r = await httpGet(ports.webToApi as number, '/', PROBE_TIMEOUT_MS);
        return r.status === 200 ? r : undefined;
      },
      30_000,
      100,
    );
    assert.equal(res.body, 'hello from api');
    assert.equal(await probe(ports.apiSidecar as number, 'web'), 'allowed');
    // No intention for batch -> api, and the dev agent's default is allow.
    assert.equal(await probe(ports.apiSidecar as number, 'batch'), 'allowed');
  });

  test('HAProxy runs several threads, and a keep-alive connection is authorized once', async () => {
    const api = sidecarOf('api');
    const runDir = api.find('created run directory')?.runDir as string;
    const session = await RuntimeSession.open(join(runDir, 'admin.sock'));
    try {
      const threads = Number(/^Nbthread: (\d+)$/m.exec(await session.send('show info'))?.[1]);
      assert.ok(threads > 1, `expected more than one thread, got ${threads}`);
    } finally {
      session.close();
    }
    const authorized = (): number => api.logs.filter((l) => l.msg === 'connection authorized').length;
    const before = authorized();
    const traffic = new Traffic(ports.webToApi as number, 2, 10_000);
    await waitFor('200 requests', async () => (traffic.report.ok >= 200 ? true : undefined), 20_000, 20);
    const report = await traffic.stop();
    const notifies = authorized() - before;
    console.log(`keep-alive: ${report.ok} requests through web's pooled connections → ${notifies} authorizations at api`);
    assert.equal(report.failed, 0, report.failures.join('\n'));
    assert.ok(notifies < report.ok / 10, `expected about one authorization per connection, got ${notifies} for ${report.ok} requests`);
  });

  test('deny on an HTTP service: 403 RBAC: access denied, as Envoy; flips converge for new connections and pooled ones', async () => {
    const traffic = new Traffic(ports.webToApi as number, 2, 60_000);
    await waitFor('traffic flowing', async () => (traffic.report.ok >= 20 ? true : undefined), 10_000, 10);

    let since = performance.now();
    await setIntentions(agent, 'api', [{ name: 'web', action: 'deny' }]);
    const denyMs = await convergence('deny for new connections', since, async () => (await probe(ports.apiSidecar as number, 'web')) === 'refused');
    const okAtDeny = traffic.report.ok;
    const pooledDenyMs = await convergence('deny for pooled keep-alive connections', since, async () => {
      const okBefore = traffic.report.ok;
      await new Promise((r) => setTimeout(r, 50));
      return traffic.report.ok === okBefore;
    });
    const direct = await tlsHttpProbe({ port: ports.apiSidecar as number, ca: roots, cert: leaves.web?.CertPEM, key: leaves.web?.PrivateKeyPEM, timeoutMs: PROBE_TIMEOUT_MS });
    assert.match(direct, /^HTTP\/1\.1 403[\s\S]*\r\n\r\nRBAC: access denied$/, direct);
    // The denial reaches the caller through web's sidecar as it left api's.
    assert.equal((await httpGet(ports.webToApi as number, '/', PROBE_TIMEOUT_MS)).status, 403);

    since = performance.now();
    await setIntentions(agent, 'api', [{ name: 'web', action: 'allow' }]);
    const allowMs = await convergence('allow for new connections', since, async () => (await probe(ports.apiSidecar as number, 'web')) === 'allowed');
    const okAtAllow = traffic.report.ok;
    const pooledAllowMs = await convergence('allow through the mesh', since, async () => traffic.report.ok > okAtAllow);
    const report = await traffic.stop();
    console.log(
      `convergence: deny ${denyMs} ms (new connections), ${pooledDenyMs} ms (pooled keep-alive); allow ${allowMs} ms (new), ${pooledAllowMs} ms (mesh traffic); requests ok ${report.ok}, failed ${report.failed}, ok while denied ${okAtAllow - okAtDeny}`,
    );
  });

  test('an open TCP connection from a source that becomes denied is closed', async () => {
    // Retried: right after start-up, web's sidecar may not know echo's endpoint yet.
    const socket = await waitFor('a long-lived connection to echo', () => openGreeted(ports.webToEcho as number, 'echo'), 30_000, 200);
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    try {
      const echoed = new Promise<void>((r) =>
        socket.on('data', (d: Buffer) => {
          if (d.toString().includes('still here')) r();
        }),
      );
      socket.write('still here\n');
      await echoed;
      const since = performance.now();
      await setIntentions(agent, 'echo', [{ name: 'web', action: 'deny' }]);
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the denied connection stayed open')), CONVERGENCE_LIMIT_MS))]);
      console.log(`open TCP connection closed ${Math.round(performance.now() - since)} ms after the deny was written`);
      const log = await waitFor('the close to be logged', async () => sidecarOf('echo').find('closed connections that intentions no longer allow'), 5_000, 20);
      assert.ok((log.closed as number) >= 1, JSON.stringify(log));
    } finally {
      socket.destroy();
      await clearIntentions(agent, 'echo');
    }
  });

  test('wildcard source intentions, and the most precise one wins', async () => {
    await setIntentions(agent, 'api', [{ name: '*', action: 'deny' }]);
    await convergence('wildcard deny', performance.now(), async () => (await probe(ports.apiSidecar as number, 'web')) === 'refused');
    assert.equal(await probe(ports.apiSidecar as number, 'batch'), 'refused');
    await setIntentions(agent, 'api', [
      { name: 'web', action: 'allow' },
      { name: '*', action: 'deny' },
    ]);
    await convergence('exact allow over wildcard deny', performance.now(), async () => (await probe(ports.apiSidecar as number, 'web')) === 'allowed');
    assert.equal(await probe(ports.apiSidecar as number, 'batch'), 'refused');
  });

  test('default policy without ACLs: allow when no intention matches', async () => {
    await clearIntentions(agent, 'api');
    await convergence('default allow', performance.now(), async () => (await probe(ports.apiSidecar as number, 'batch')) === 'allowed');
    assert.equal(await probe(ports.apiSidecar as number, 'web'), 'allowed');
  });

  test('a certificate from a foreign CA is refused', async () => {
    const foreign = foreignLeaf('web');
    const answer = await tlsHttpProbe({ port: ports.apiSidecar as number, ca: roots, cert: foreign.certPem, key: foreign.keyPem, timeoutMs: PROBE_TIMEOUT_MS });
    assert.match(answer, /^refused: (?!timeout)/, answer);
  });

  test(`Consul paused for ${CONSUL_PAUSE_MS / 1000} s: decisions stay correct from the cache, nothing hangs, watching resumes`, async () => {
    await setIntentions(agent, 'api', [
      { name: 'web', action: 'allow' },
      { name: 'batch', action: 'deny' },
    ]);
    await convergence('batch denied', performance.now(), async () => (await probe(ports.apiSidecar as number, 'batch')) === 'refused');
    assert.equal(await probe(ports.apiSidecar as number, 'web'), 'allowed');

    const pid = agent.process.pid as number;
    process.kill(pid, 'SIGSTOP');
    const pausedAt = performance.now();
    let rounds = 0;
    try {
      while (performance.now() - pausedAt < CONSUL_PAUSE_MS) {
        assert.equal(await probe(ports.apiSidecar as number, 'web'), 'allowed');
        assert.equal(await probe(ports.apiSidecar as number, 'batch'), 'refused');
        assert.equal((await httpGet(ports.webToApi as number, '/', PROBE_TIMEOUT_MS)).status, 200);
        rounds++;
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    console.log(`Consul paused ${Math.round(performance.now() - pausedAt)} ms: ${rounds} rounds of probes, all correct`);
    const since = performance.now();
    await setIntentions(agent, 'api', [
      { name: 'web', action: 'allow' },
      { name: 'batch', action: 'allow' },
    ]);
    await waitFor('a change after SIGCONT to take effect', async () => ((await probe(ports.apiSidecar as number, 'batch')) === 'allowed' ? true : undefined), 60_000, 50);
    console.log(`after SIGCONT, a change took effect in ${Math.round(performance.now() - since)} ms`);
  });

  test('ACLs on with default deny: refused without an intention, allowed with one', async () => {
    aclAgent = await ConsulDevAgent.start({
      token: ROOT_TOKEN,
      extraConfig: `acl { enabled = true, default_policy = "deny", tokens { initial_management = "${ROOT_TOKEN}", agent = "${ROOT_TOKEN}" } }`,
    });
    const [appPort, sidecarPort] = (await freePorts(2)) as [number, number];
    apps.push(await startHttpApp('secure', appPort));
    await registerMeshService(aclAgent, { id: 'secure', name: 'secure', port: appPort, sidecarPort });
    await startSidecar('secure', aclAgent, ['-token', ROOT_TOKEN]);
    const aclRoots = (await aclAgent.get<{ Roots: Array<{ RootCert: string }> }>('/v1/agent/connect/ca/roots')).Roots.map((r) => r.RootCert).join('\n');
    leaves.web = await aclAgent.get('/v1/agent/connect/ca/leaf/web');
    assert.equal(await probe(sidecarPort, 'web', aclRoots), 'refused');
    await setIntentions(aclAgent, 'secure', [{ name: 'web', action: 'allow' }]);
    await convergence('allowed by intention under default deny', performance.now(), async () => (await probe(sidecarPort, 'web', aclRoots)) === 'allowed');
  });
});
