/**
 * Discovery chain targets in another datacenter, mesh gateway mode `none`: two real Consul dev
 * agents on loopback (dc1, the primary, and dc2) joined over the WAN, and real HAProxy. In dc1, web's
 * sidecar has `api` as an HTTP upstream and `api-dc1` serves api (with a TTL check the tests turn
 * critical); in dc2, `api-dc2` serves api behind its own sidecar, run against the dc2 agent. Every
 * app answers `hello from <instance id>`.
 *
 * What it proves:
 * - the set-up: dc2's Connect CA is federated with dc1's (same trust domain; dc2 signs with an
 *   intermediate issued by dc1's root), so dc2's sidecar presents a chain that web's roots verify;
 * - Failover `{"*": {Datacenters: ["dc2"]}}`: api-dc1 critical under load moves web's traffic to
 *   api-dc2 (its sidecar dialled directly, no gateway), and back when it passes, with few failures;
 * - Redirect `{Datacenter: "dc2"}`: everything goes to api-dc2 while api-dc1 is healthy.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, startTunableHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { tlsHttpProbe } from '../../devtools/probes.js';
import { msSince, note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { Traffic, waitForAnswers } from '../../devtools/traffic.js';
import { explainedBy } from '../../devtools/explained.js';

/** Requests of the "only these instances answer" samples. */
const SAMPLE_REQUESTS = 40;
/** Failed requests allowed while traffic fails over to dc2 and back, as a share of all requests then. */
const MAX_FAILOVER_FAILED_SHARE = 0.05;
/** Bound of every wait on Consul (federation, replication, the sidecars' view). */
const WAIT_MS = 30_000;

interface Roots {
  ActiveRootID: string;
  TrustDomain: string;
  Roots: Array<{ ID: string; RootCert: string; IntermediateCerts: string[] | null; Active: boolean }>;
}
interface Leaf {
  CertPEM: string;
  PrivateKeyPEM: string;
  ServiceURI: string;
}
interface CompiledChain {
  Chain: {
    Protocol: string;
    Nodes: Record<string, { Resolver?: { Target: string; Failover?: { Targets: string[] } } }>;
    Targets: Record<string, { Datacenter: string; MeshGateway?: { Mode?: string } }>;
  };
}

let dc1: ConsulDevAgent | undefined;
let dc2: ConsulDevAgent | undefined;
let baseDir: string | undefined;
const apps: RunningApp[] = [];
const sidecars = new Map<string, SidecarProcess>();
let ports: Record<string, number>;
/** dc2's start until its CA roots carried dc1's trust domain and active root, in ms. */
let federationMs = 0;

const port = (name: string): number => {
  const value = ports[name];
  if (value === undefined) throw new Error(`no port ${name}`);
  return value;
};
const agent1 = (): ConsulDevAgent => dc1 as ConsulDevAgent;
const agent2 = (): ConsulDevAgent => dc2 as ConsulDevAgent;
const hello = (id: string): string => `hello from ${id}`;
const web = (): SidecarProcess => sidecars.get('web') as SidecarProcess;
const show = (answers: Map<string, number>): string => JSON.stringify(Object.fromEntries(answers));
const certificates = (pem: string): X509Certificate[] => (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((c) => new X509Certificate(c));
const oneLine = (dn: string | undefined): string => (dn ?? '').replace(/\n/g, ', ');
const rootsPem = (roots: Roots): string => roots.Roots.map((r) => r.RootCert.trim()).join('\n');

async function writeResolver(body: Record<string, unknown>): Promise<void> {
  await agent1().put('/v1/config', { Kind: 'service-resolver', Name: 'api', ...body });
}

async function setApiDc1Check(state: 'pass' | 'fail'): Promise<void> {
  await agent1().put(`/v1/agent/check/${state}/api-dc1-ttl`);
}

/** GET through web's api upstream on a new connection: status and body, or `error: <reason>`. */
async function viaWeb(timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port('webToApi')}/`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, body: await res.text() };
  } catch (err) {
    return { status: 0, body: `error: ${(err as Error).message}` };
  }
}

/** Who answered `n` sequential requests through web's api upstream (a failure counts as `status <n>: <body>`). */
async function sample(n = SAMPLE_REQUESTS): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const { status, body } = await viaWeb();
    const key = status === 200 ? body : `status ${status}: ${body.slice(0, 120)}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return seen;
}

function assertAnsweredBy(answers: Map<string, number>, ids: readonly string[], what: string): void {
  assert.deepEqual([...answers.keys()].sort(), ids.map(hello).sort(), `${what}: ${show(answers)}`);
}

/** What Consul compiled for api in dc1 and knows of api in dc2, and what web's sidecar did, for failure messages. */
async function context(): Promise<string> {
  const lines: string[] = [];
  try {
    const chain = await agent1().get<CompiledChain>('/v1/discovery-chain/api?compile-dc=dc1');
    lines.push(`dc1's chain for api: ${JSON.stringify({ nodes: chain.Chain.Nodes, targets: Object.keys(chain.Chain.Targets) })}`);
  } catch (err) {
    lines.push(`dc1's chain for api: ${(err as Error).message}`);
  }
  try {
    const entries = await agent1().get<Array<{ Service: { ID: string; Port: number }; Checks: Array<{ Name: string; Status: string }> }>>('/v1/health/connect/api?dc=dc2');
    lines.push(`api in dc2 (asked of dc1): ${JSON.stringify(entries.map((e) => ({ id: e.Service.ID, port: e.Service.Port, checks: e.Checks.map((c) => `${c.Name}: ${c.Status}`) })))}`);
  } catch (err) {
    lines.push(`api in dc2: ${(err as Error).message}`);
  }
  const interesting = ['reloading haproxy', 'haproxy reloaded', 'applied runtime changes', 'waiting for the first endpoints of new upstreams'];
  for (const l of sidecars.get('web')?.logs.filter((l) => interesting.includes(l.msg as string) || l.level === 'warn' || l.level === 'error') ?? []) {
    lines.push(
      `${l.time as string} web ${l.msg as string} ${JSON.stringify({ reasons: l.reasons, kinds: l.kinds, failures: l.failures, watch: l.watch, err: l.err, targets: l.targets, item: l.item })}`,
    );
  }
  return lines.slice(-40).join('\n');
}

/** Runs `step`; a failure carries web's recent history and Consul's view of api. */
const explained = explainedBy(context);

/** Waits until traffic through web's api upstream is answered by exactly these instances. */
async function waitForOnly(ids: readonly string[], timeoutMs = WAIT_MS): Promise<void> {
  const traffic = new Traffic(port('webToApi'), 2, timeoutMs + 10_000);
  try {
    await explained(waitForAnswers(traffic, ids, timeoutMs));
  } finally {
    await traffic.stop();
  }
}

/** The haproxy.cfg web's sidecar last applied, once no reload started after log index `mark` is in flight. */
async function waitForWebConfig(what: string, mark: number, ready: (cfg: string) => boolean): Promise<string> {
  const dir = web().find('created run directory')?.runDir;
  if (typeof dir !== 'string') throw new Error('web: no run directory logged');
  return explained(
    waitFor(
      what,
      async () => {
        const logs = web().logs.slice(mark);
        const lastReload = logs.findLastIndex((l) => l.msg === 'reloading haproxy');
        if (lastReload >= 0 && !logs.slice(lastReload).some((l) => l.msg === 'haproxy reloaded')) return undefined;
        const cfg = await readFile(join(dir, 'haproxy.cfg'), 'utf8');
        return ready(cfg) ? cfg : undefined;
      },
      WAIT_MS,
      100,
    ),
  );
}

before(async () => {
  dc1 = await ConsulDevAgent.start({ extraConfig: 'datacenter = "dc1"\nprimary_datacenter = "dc1"' });
  const dc2StartedAt = performance.now();
  // A node name of its own (-hcl is merged after the dev agent's `-node dev`), and the WAN join at start.
  dc2 = await ConsulDevAgent.start({
    extraConfig: ['datacenter = "dc2"', 'primary_datacenter = "dc1"', 'node_name = "dev-dc2"', `retry_join_wan = ["127.0.0.1:${dc1.serfWanPort}"]`].join('\n'),
  });
  // Both list dc1 and dc2 (each its own first: the list is sorted by round-trip time).
  for (const agent of [dc1, dc2]) {
    await waitFor('both datacenters in the WAN pool', async () => ((await agent.get<string[]>('/v1/catalog/datacenters')).sort().join(',') === 'dc1,dc2' ? true : undefined), WAIT_MS, 100);
  }
  // Secondary CA federation: dc2's leader asks dc1 for its roots and for an intermediate signed by the active one.
  const primaryRoots = await dc1.get<Roots>('/v1/agent/connect/ca/roots');
  await waitFor(
    "dc2's CA federated with dc1's",
    async () => {
      const roots = await agent2().get<Roots>('/v1/agent/connect/ca/roots');
      const active = roots.Roots.find((r) => r.ID === roots.ActiveRootID);
      return roots.TrustDomain === primaryRoots.TrustDomain && roots.ActiveRootID === primaryRoots.ActiveRootID && (active?.IntermediateCerts?.length ?? 0) > 0 ? true : undefined;
    },
    WAIT_MS,
    100,
  );
  federationMs = msSince(dc2StartedAt);

  baseDir = await mkdtemp(join(tmpdir(), 'hc-chain-xdc-'));
  const names = ['web', 'webSidecar', 'webToApi', 'apiDc1', 'apiDc1Sidecar', 'apiDc2', 'apiDc2Sidecar'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));

  // Config entries are written in the primary (a write in dc2 is forwarded there) and replicated to dc2.
  await dc1.put('/v1/config', { Kind: 'proxy-defaults', Name: 'global', MeshGateway: { Mode: 'none' } });
  await dc1.put('/v1/config', { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
  await waitFor('service-defaults for api replicated to dc2', async () => ((await agent2().fetch('/v1/config/service-defaults/api')).ok ? true : undefined), WAIT_MS, 100);
  await writeResolver({ Failover: { '*': { Datacenters: ['dc2'] } } });

  apps.push(await startTunableHttpApp('api-dc1', port('apiDc1')));
  apps.push(await startTunableHttpApp('api-dc2', port('apiDc2')));
  apps.push(await startHttpApp('web', port('web'), port('webToApi')));
  await registerMeshService(dc1, { id: 'api-dc1', name: 'api', port: port('apiDc1'), sidecarPort: port('apiDc1Sidecar'), protocol: 'http', ttlCheck: true });
  await registerMeshService(dc2, { id: 'api-dc2', name: 'api', port: port('apiDc2'), sidecarPort: port('apiDc2Sidecar'), protocol: 'http', ttlCheck: true });
  await registerMeshService(dc1, {
    id: 'web',
    name: 'web',
    port: port('web'),
    sidecarPort: port('webSidecar'),
    protocol: 'http',
    upstreams: [{ destinationName: 'api', localBindPort: port('webToApi'), protocol: 'http' }],
  });
  const dir = baseDir;
  await Promise.all([startReadySidecar(sidecars, 'api-dc1', dc1.httpAddr, dir), startReadySidecar(sidecars, 'api-dc2', dc2.httpAddr, dir), startReadySidecar(sidecars, 'web', dc1.httpAddr, dir)]);
});

after(async () => {
  await Promise.all([...sidecars.values()].map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await dc2?.stop();
  await dc1?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('discovery chain across datacenters (mesh gateway mode none) with two real Consul agents and HAProxy', () => {
  test("dc2's CA is federated with dc1's: same trust domain, and dc2's leaves and sidecar verify against the roots web sees", async () => {
    const roots1 = await agent1().get<Roots>('/v1/agent/connect/ca/roots');
    const roots2 = await agent2().get<Roots>('/v1/agent/connect/ca/roots');
    assert.equal(roots2.TrustDomain, roots1.TrustDomain, 'trust domain');
    assert.equal(roots2.ActiveRootID, roots1.ActiveRootID, 'active root');
    const root = new X509Certificate(roots1.Roots.find((r) => r.ID === roots1.ActiveRootID)?.RootCert ?? '');

    // A leaf signed in dc2: leaf + dc2's intermediate, the intermediate issued by dc1's active root.
    const leaf = await agent2().get<Leaf>('/v1/agent/connect/ca/leaf/api');
    const [cert, intermediate, ...rest] = certificates(leaf.CertPEM);
    assert.ok(cert !== undefined && intermediate !== undefined, `dc2's leaf carries its intermediate: ${leaf.CertPEM}`);
    assert.equal(rest.length, 0);
    assert.equal(leaf.ServiceURI, `spiffe://${roots1.TrustDomain}/ns/default/dc/dc2/svc/api`);
    assert.ok(cert.checkIssued(intermediate) && cert.verify(intermediate.publicKey), 'the leaf is signed by the intermediate it carries');
    assert.ok(intermediate.checkIssued(root) && intermediate.verify(root.publicKey), "dc2's intermediate is signed by dc1's active root");
    assert.ok(!intermediate.checkIssued(intermediate), 'the intermediate is not self-signed');

    // End to end: api-dc2's sidecar, as a TLS client with web's leaf and dc1's roots sees it.
    const webLeaf = await agent1().get<Leaf>('/v1/agent/connect/ca/leaf/web');
    const answer = await tlsHttpProbe({ port: port('apiDc2Sidecar'), ca: rootsPem(roots1), cert: webLeaf.CertPEM, key: webLeaf.PrivateKeyPEM });
    note(
      `CA federation: dc2 federated ${federationMs} ms after its start (trust domain ${roots2.TrustDomain}, active root ${roots2.ActiveRootID.slice(0, 11)}…); ` +
        `dc2 leaf ${cert.subjectAltName} ← intermediate '${oneLine(intermediate.subject) || intermediate.subjectAltName}' (issuer '${oneLine(intermediate.issuer)}') ← dc1 root '${oneLine(root.subject)}'; ` +
        `api-dc2's sidecar to web's leaf + dc1 roots: '${answer.split('\r\n')[0]}'`,
    );
    assert.match(answer, /^HTTP\/1\.1 200/, `api-dc2's sidecar with web's leaf and dc1's roots: ${answer.slice(0, 300)}`);
    assert.ok(answer.includes(hello('api-dc2')), answer.slice(-200));
  });

  test('Failover to dc2: api-dc1 critical under load moves traffic to api-dc2, and back when it passes again', async () => {
    // The set-up, not the sidecar: dc1 compiles two targets, none through a gateway, and dc1 sees api-dc2's sidecar.
    const compiled = await agent1().get<CompiledChain>('/v1/discovery-chain/api?compile-dc=dc1');
    const targets = Object.fromEntries(Object.entries(compiled.Chain.Targets).map(([id, t]) => [id, t.MeshGateway?.Mode ?? '']));
    assert.deepEqual(targets, { 'api.default.default.dc1': 'none', 'api.default.default.dc2': 'none' });
    const remote = await agent1().get<Array<{ Service: { ID: string; Port: number } }>>('/v1/health/connect/api?dc=dc2');
    assert.deepEqual(
      remote.map((e) => [e.Service.ID, e.Service.Port]),
      [['api-dc2-sidecar-proxy', port('apiDc2Sidecar')]],
    );

    // api-dc2 is in web's HAProxy before the switch (else the switch would measure the chain's arrival).
    await waitForWebConfig('api-dc2’s sidecar in web’s applied configuration', 0, (cfg) => cfg.includes(`127.0.0.1:${port('apiDc2Sidecar')}`));
    await waitForOnly(['api-dc1']);
    const healthy = await sample();
    assertAnsweredBy(healthy, ['api-dc1'], 'api-dc1 healthy');
    const viaApp = await fetch(`http://127.0.0.1:${port('web')}/`, { signal: AbortSignal.timeout(5_000) }).then((r) => r.text());
    assert.equal(viaApp, `hello from web -> ${hello('api-dc1')}`);

    const traffic = new Traffic(port('webToApi'), 4);
    try {
      await explained(waitForAnswers(traffic, ['api-dc1']));
      const start = { ok: traffic.report.ok, failed: traffic.report.failed };
      const failedAt = performance.now();
      await setApiDc1Check('fail');
      await explained(waitForAnswers(traffic, ['api-dc2']));
      const toDc2Ms = msSince(failedAt);
      // The last response from the instance switched away from, relative to the switch (waitForAnswers needs one whole clean window after it).
      const lastDc1Ms = Math.round((traffic.report.lastAnswerAt.get(hello('api-dc1')) ?? failedAt) - failedAt);
      const mid = { ok: traffic.report.ok, failed: traffic.report.failed };
      const passedAt = performance.now();
      await setApiDc1Check('pass');
      await explained(waitForAnswers(traffic, ['api-dc1']));
      const backMs = msSince(passedAt);
      const lastDc2Ms = Math.round((traffic.report.lastAnswerAt.get(hello('api-dc2')) ?? passedAt) - passedAt);
      const report = await traffic.stop();
      const total = report.ok - start.ok + report.failed - start.failed;
      const failed = report.failed - start.failed;
      const toDc2 = { total: mid.ok - start.ok + mid.failed - start.failed, failed: mid.failed - start.failed };
      note(
        `failover to dc2 under load (4 keep-alive loops): ${total} requests from api-dc1's check failing until api-dc1 served again, ${failed} failed ` +
          `(${toDc2.failed} of ${toDc2.total} while failing over, ${failed - toDc2.failed} of ${total - toDc2.total} while failing back); ` +
          `last answer from api-dc1 ${lastDc1Ms} ms after its check failed (api-dc2 alone in a 300 ms window ${toDc2Ms} ms after), ` +
          `last answer from api-dc2 ${lastDc2Ms} ms after the check passed (api-dc1 alone ${backMs} ms after); answers ${show(report.answers)}` +
          `${failed > 0 ? `; e.g. ${report.failures.slice(0, 3).join(' | ')}` : ''}`,
      );
      assert.ok(report.answers.has(hello('api-dc2')), 'api-dc2 served');
      assert.ok(failed <= total * MAX_FAILOVER_FAILED_SHARE, `${failed} of ${total} requests failed: ${report.failures.join('\n')}\n${await context()}`);
    } finally {
      await traffic.stop();
      await setApiDc1Check('pass');
    }
  });

  test('Redirect to dc2: every request goes to api-dc2 while api-dc1 is healthy, and back to api-dc1 without the redirect', async () => {
    await setApiDc1Check('pass');
    await waitForOnly(['api-dc1']);
    await writeResolver({ Redirect: { Datacenter: 'dc2' } });
    const compiled = await agent1().get<CompiledChain>('/v1/discovery-chain/api?compile-dc=dc1');
    assert.deepEqual(Object.keys(compiled.Chain.Targets), ['api.default.default.dc2'], 'the redirected chain has the dc2 target only');
    const redirectedAt = performance.now();
    await waitForOnly(['api-dc2']);
    const switchMs = msSince(redirectedAt);
    const redirected = await sample();
    assertAnsweredBy(redirected, ['api-dc2'], 'redirected to dc2');

    await writeResolver({ Failover: { '*': { Datacenters: ['dc2'] } } });
    await waitForOnly(['api-dc1']);
    const back = await sample();
    note(`redirect to dc2: api-dc2 alone ${switchMs} ms after the resolver was written; ${SAMPLE_REQUESTS} requests answered ${show(redirected)}; without the redirect ${show(back)}`);
    assertAnsweredBy(back, ['api-dc1'], 'without the redirect');
  });
});
