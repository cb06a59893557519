/**
 * Live updates under continuous traffic, with a real Consul dev agent and real HAProxy: endpoint
 * churn and health flips are applied through the runtime API with no failed request and no
 * reload; a CA rotation re-issues leaves that both sides serve with no failed request; a new
 * upstream costs exactly one reload, with its reason.
 */
import assert from 'node:assert/strict';
import type { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService, type MeshServiceSpec } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { rotateConnectCa } from '../../devtools/certs.js';
import { httpGet, servedCertificate } from '../../devtools/probes.js';
import { type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { Traffic, waitForAnswers } from '../../devtools/traffic.js';

const CHURN_CYCLES = 6;

let agent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const sidecars = new Map<string, SidecarProcess>();
let ports: Record<string, number>;
let webSpec: MeshServiceSpec;
const apiSpec = (n: number): MeshServiceSpec => ({
  id: `api-${n}`,
  name: 'api',
  port: ports[`api${n}`] as number,
  sidecarPort: ports[`api${n}Sidecar`] as number,
  protocol: 'http',
  ttlCheck: true,
});

const startSidecar = (service: string): Promise<SidecarProcess> => startReadySidecar(sidecars, service, agent.httpAddr, baseDir);

const web = (): SidecarProcess => sidecars.get('web') as SidecarProcess;
/** What the sidecars did, for failure messages. */
function timeline(): string {
  const lines: string[] = [];
  for (const [service, sidecar] of sidecars) {
    for (const l of sidecar.logs) {
      if (['reloading haproxy', 'applied runtime changes', 'haproxy reloaded'].includes(l.msg as string) || l.level === 'warn' || l.level === 'error') {
        lines.push(`${l.time as string} ${service} ${l.msg as string} ${JSON.stringify({ reasons: l.reasons, kinds: l.kinds, err: l.err })}`);
      }
    }
  }
  return lines.sort().slice(-60).join('\n');
}

const count = (sidecar: SidecarProcess, msg: string): number => sidecar.logs.filter((l) => l.msg === msg).length;

/** Waits until the passing instances of `api` are exactly `ids`, and web's sidecar has applied it. */
async function waitForInstances(ids: string[], traffic: Traffic): Promise<void> {
  await waitFor(
    `api instances ${ids.join(',')}`,
    async () => {
      const entries = await agent.get<Array<{ Service: { Proxy: { DestinationServiceID: string } } }>>('/v1/health/connect/api?passing');
      const live = entries.map((e) => e.Service.Proxy.DestinationServiceID).sort();
      return JSON.stringify(live) === JSON.stringify([...ids].sort()) ? true : undefined;
    },
    30_000,
    50,
  );
  // Traffic shows the shift: every wanted instance answers, and no other.
  await waitForAnswers(traffic, ids);
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-live-'));
  const names = ['api1', 'api1Sidecar', 'api2', 'api2Sidecar', 'api3', 'api3Sidecar', 'web', 'webSidecar', 'webToApi', 'webToApi2'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  for (const n of [1, 2, 3]) {
    apps.push(await startHttpApp(`api-${n}`, ports[`api${n}`] as number));
    await registerMeshService(agent, apiSpec(n));
  }
  webSpec = {
    id: 'web',
    name: 'web',
    port: ports.web as number,
    sidecarPort: ports.webSidecar as number,
    protocol: 'http',
    upstreams: [{ destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' }],
  };
  await registerMeshService(agent, webSpec);
  await Promise.all(['api-1', 'api-2', 'api-3', 'web'].map((s) => startSidecar(s)));
});

after(async () => {
  await Promise.all([...sidecars.values()].map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('live updates with real Consul and HAProxy', () => {
  test('endpoint churn and health flips under traffic: 0 failed requests, 0 reloads', async () => {
    // Count from a mesh that already serves: at start-up web may not know api's instances yet.
    await waitFor(
      'all api instances answering through web',
      async () => {
        const seen = new Set<string>();
        for (let i = 0; i < 12; i++) seen.add((await httpGet(ports.webToApi as number)).body);
        return seen.size === 3 ? true : undefined;
      },
      30_000,
      100,
    );
    const traffic = new Traffic(ports.webToApi as number, 4);
    try {
      await waitForInstances(['api-1', 'api-2', 'api-3'], traffic);
      const reloadsBefore = count(web(), 'reloading haproxy');
      for (let cycle = 0; cycle < CHURN_CYCLES; cycle++) {
        await agent.put('/v1/agent/service/deregister/api-3');
        await waitForInstances(['api-1', 'api-2'], traffic);
        await agent.put('/v1/agent/check/fail/api-2-ttl');
        await waitForInstances(['api-1'], traffic);
        await registerMeshService(agent, apiSpec(3));
        await agent.put('/v1/agent/check/pass/api-2-ttl');
        await waitForInstances(['api-1', 'api-2', 'api-3'], traffic);
      }
      const report = await traffic.stop();
      assert.equal(report.failed, 0, `failed requests: ${report.failures.join('\n')}\n${timeline()}`);
      assert.ok(report.ok > 100, `only ${report.ok} requests went through`);
      const reloads = web()
        .logs.filter((l) => l.msg === 'reloading haproxy')
        .slice(reloadsBefore);
      assert.equal(reloads.length, 0, `endpoint changes must not reload haproxy: ${JSON.stringify(reloads)}`);
    } finally {
      await traffic.stop();
    }
  });

  /** Rotates Consul's CA and waits until api-1 and web both serve a leaf of the new CA. */
  async function rotateUntilNewLeavesServed(): Promise<void> {
    const { activeRoot, allRoots } = await rotateConnectCa(agent);
    const fromNewCa = (cert: X509Certificate | undefined): boolean => cert !== undefined && cert.issuer === activeRoot.subject && cert.serialNumber !== '';
    // The public side: api-1 serves a leaf of the new CA, to a client presenting a leaf of the new CA...
    const webLeaf = await agent.get<{ CertPEM: string; PrivateKeyPEM: string }>('/v1/agent/connect/ca/leaf/web');
    const client = { ca: allRoots, cert: webLeaf.CertPEM, key: webLeaf.PrivateKeyPEM };
    await waitFor('api-1 serving a leaf of the new CA', async () => (fromNewCa(await servedCertificate(ports.api1Sidecar as number, client)) ? true : undefined), 60_000, 250);
    // ...and the upstream side: web's sidecar presents a leaf of the new CA (HAProxy reports it in use).
    await waitFor('web presenting a leaf of the new CA', async () => (fromNewCa(await servedCertificate(ports.webSidecar as number, client)) ? true : undefined), 60_000, 250);
  }

  /** Each sidecar's reloads logged since `before` (counts by sidecar name), after checking that none died or lost HAProxy. */
  function reloadsSince(before: ReadonlyMap<string, number>): Map<string, Array<Record<string, unknown>>> {
    const reloads = new Map<string, Array<Record<string, unknown>>>();
    for (const [name, sidecar] of sidecars) {
      assert.equal(sidecar.process.exitCode, null, `${name} died`);
      assert.ok(!sidecar.logs.some((l) => l.msg === 'haproxy master exited unexpectedly'), `${name}: haproxy crashed`);
      reloads.set(name, sidecar.logs.filter((l) => l.msg === 'reloading haproxy').slice(before.get(name)));
    }
    return reloads;
  }
  const reloadCounts = (): Map<string, number> => new Map([...sidecars].map(([name, s]) => [name, count(s, 'reloading haproxy')]));

  /** A rotation under traffic that must change only the leaves: 0 reloads, 0 failed requests. */
  async function rotateAtRuntimeUnderTraffic(label: string): Promise<void> {
    const traffic = new Traffic(ports.webToApi as number, 4);
    try {
      const before = reloadCounts();
      await rotateUntilNewLeavesServed();
      await new Promise((r) => setTimeout(r, 1_000));
      const report = await traffic.stop();
      for (const [name, reloads] of reloadsSince(before)) assert.equal(reloads.length, 0, `${label}, ${name}: ${JSON.stringify(reloads)}`);
      process.stdout.write(`# ${label} under traffic: ${report.ok} requests, ${report.failed} failed\n`);
      assert.equal(report.failed, 0, `failed requests: ${report.failures.join('\n')}\n${timeline()}`);
    } finally {
      await traffic.stop();
    }
  }

  // Consul cross-signs the new root with the old one, so the new leaves verify against the old
  // root: the trust bundle stays as it is (src/translate/trust-bundle.ts) and only the leaves
  // change, at runtime. The old root leaves the bundle when Consul prunes it (one reload, later).
  test('a CA rotation under traffic: new leaves on both sides at runtime, 0 reloads, 0 failed requests', () => rotateAtRuntimeUnderTraffic('CA rotation'));

  // Rotations in a row make a chain of cross-signatures. A root whose bridge is itself left out
  // must join the bundle (its leaves carry only the cross-signature by the root before it), and
  // then the next root is bridged by it again: one reload on every other rotation, none on the others.
  test('two more CA rotations: the second of the three reloads each sidecar once (reason roots), the third at runtime with 0 failed requests', async () => {
    const beforeSecond = reloadCounts();
    await rotateUntilNewLeavesServed();
    await waitFor('a reload of every sidecar for the new root', async () => ([...reloadsSince(beforeSecond).values()].every((r) => r.length >= 1) ? true : undefined), 30_000, 200);
    await new Promise((r) => setTimeout(r, 1_000));
    for (const [name, reloads] of reloadsSince(beforeSecond)) {
      assert.equal(reloads.length, 1, `${name}: ${JSON.stringify(reloads)}`);
      assert.deepEqual(reloads[0]?.reasons, ['CA roots changed (1 added, 0 removed)'], `${name}: ${JSON.stringify(reloads)}`);
    }
    await rotateAtRuntimeUnderTraffic('third CA rotation');
  });

  test('a new upstream costs exactly one reload, with its reason logged', async () => {
    const reloadsBefore = count(web(), 'reloading haproxy');
    await registerMeshService(agent, {
      ...webSpec,
      upstreams: [...(webSpec.upstreams ?? []), { destinationName: 'api', localBindPort: ports.webToApi2 as number, protocol: 'http', datacenter: 'dc1' }],
    });
    await waitFor(
      'the second upstream listener',
      async () => {
        const res = await fetch(`http://127.0.0.1:${ports.webToApi2}/`).catch(() => undefined);
        return res?.ok ? true : undefined;
      },
      30_000,
      200,
    );
    const reloads = web()
      .logs.filter((l) => l.msg === 'reloading haproxy')
      .slice(reloadsBefore);
    assert.equal(reloads.length, 1, JSON.stringify(reloads));
    assert.ok(
      ((reloads[0]?.reasons ?? []) as string[]).some((r) => /frontend .* added/.test(r)),
      JSON.stringify(reloads[0]),
    );
  });
});
