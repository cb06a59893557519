/**
 * The connection budget towards the Consul agent (README, "Connections to the agent"): every watch
 * is a blocking query on its own HTTP connection, and every sidecar on a node shares the agent's
 * limits.http_max_conns_per_client (200). With a real dev agent, web's sidecar gets 10 TCP upstreams
 * whose resolvers each fail over to two more services (3 targets per upstream), then the same 10
 * upstreams failing over to two shared services. The connections its process holds to the agent's
 * HTTP port are counted from /proc and compared with the formula
 * `service upstreams + distinct targets + 4` (registration, leaf, roots, intentions).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { tcpConnectionsTo } from '../../devtools/proc.js';
import { note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';

const UPSTREAMS = 10;
/** Watches that do not depend on upstreams: registration, leaf, roots, intentions. */
const FIXED_WATCHES = 4;
/**
 * Idle keep-alive connections the client may still hold: the first request of every watch does not
 * block, and the client keeps its connection for 4 s when the blocking request that follows took
 * another one. They close by themselves.
 */
const IDLE_SLACK = 2;
/** Longer than the client's 4 s keep-alive, so idle connections are gone. */
const SETTLE_MS = 5_000;

let agent: ConsulDevAgent;
let baseDir: string;
const sidecars: SidecarProcess[] = [];
let agentPort: number;
let upstreamPorts: number[];
let webPort: number;
let webSidecarPort: number;

async function writeResolvers(backups: (i: number) => [string, string]): Promise<void> {
  for (let i = 0; i < UPSTREAMS; i++) {
    const [b1, b2] = backups(i);
    await agent.put('/v1/config', { Kind: 'service-resolver', Name: `s${i}`, Failover: { '*': { Targets: [{ Service: b1 }, { Service: b2 }] } } });
  }
}

/** The most connections web's daemon held to the agent, and how many it holds once idle ones closed (bounded wait). */
async function settledConnections(pid: number, expected: number): Promise<{ peak: number; settled: number }> {
  let peak = 0;
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const now = tcpConnectionsTo(pid, agentPort);
    peak = Math.max(peak, now);
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= SETTLE_MS && now >= expected && now <= expected + IDLE_SLACK) {
      break;
    }
    await delay(100);
  }
  return { peak, settled: last };
}

before(async () => {
  agent = await ConsulDevAgent.start();
  agentPort = Number(agent.httpAddr.split(':')[1]);
  baseDir = await mkdtemp(join(tmpdir(), 'hc-conns-'));
  const ports = await freePorts(UPSTREAMS + 2);
  webPort = ports[0] as number;
  webSidecarPort = ports[1] as number;
  upstreamPorts = ports.slice(2);
  await writeResolvers((i) => [`s${i}-b1`, `s${i}-b2`]);
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: webPort,
    sidecarPort: webSidecarPort,
    upstreams: upstreamPorts.map((port, i) => ({ destinationName: `s${i}`, localBindPort: port })),
  });
  await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir);
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('connections to the Consul agent', () => {
  test('10 upstreams of 3 targets each: one connection per chain and per distinct target, plus 4', async () => {
    const pid = sidecars[0]?.process.pid as number;
    const distinctTargets = UPSTREAMS * 3;
    const expected = UPSTREAMS + distinctTargets + FIXED_WATCHES;
    const { peak, settled } = await settledConnections(pid, expected);
    note(`10 upstreams x 3 targets (distinct): ${settled} connections to the agent once idle ones closed, ${peak} at most after start (formula ${expected})`);
    assert.ok(settled >= expected && settled <= expected + IDLE_SLACK, `${settled} connections, expected ${expected} (+${IDLE_SLACK} idle at most)`);
  });

  test('the same 10 upstreams failing over to two shared services: their target watches are shared', async () => {
    await writeResolvers(() => ['shared-b1', 'shared-b2']);
    const pid = sidecars[0]?.process.pid as number;
    const distinctTargets = UPSTREAMS + 2;
    const expected = UPSTREAMS + distinctTargets + FIXED_WATCHES;
    await waitFor('the shared targets to replace the per-upstream ones', async () => (tcpConnectionsTo(pid, agentPort) <= expected + IDLE_SLACK ? true : undefined), 30_000, 200);
    const { settled } = await settledConnections(pid, expected);
    note(`10 upstreams failing over to 2 shared services: ${settled} connections to the agent (formula ${expected}; 44 without sharing)`);
    assert.ok(settled >= expected && settled <= expected + IDLE_SLACK, `${settled} connections, expected ${expected} (+${IDLE_SLACK} idle at most)`);
  });
});
