/**
 * Control-plane case "upstream scale": one haproxy-connect (in process, driven by an in-process
 * fake Consul agent so that only haproxy-connect and HAProxy are measured) whose registration has
 * U upstreams with E endpoints each (full: 1,000 × 10 = 10,000 TLS servers; quick: 100 × 10):
 * - upstreams-ready: from the start of the daemon to its first configuration live (`sidecar
 *   ready`: every listener bound, every server configured);
 * - upstreams-reweighted: from the agent answers that change the weight of every endpoint of every
 *   upstream to the change being live.
 * Also reports the memory of HAProxy (RSS) and of the daemon (V8 heap in use, which is what the
 * sidecar adds: the benchmark shares the process).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { freePorts, waitFor } from '../../devtools/ports.js';
import type { UpstreamQuery } from '../../src/consul/api.js';
import { FakeConsulAgentApi } from '../../src/consul/fake.js';
import { parseShowProc, sendCommand } from '../../src/haproxy/master-cli.js';
import { MASTER_SOCKET, run as runSidecar } from '../../src/main.js';
import type { Endpoint, ProxyRegistration } from '../../src/snapshot/types.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { roots, snapshot, upstream, webLeaf } from '../../test/helpers/fixtures.js';
import { webSidecarConfig } from '../../test/helpers/fake-web-agent.js';
import { rssKiB } from '../lib/proc-stats.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';

const NAME = 'upstream-scale';
const READY = 'upstreams-ready';
const REWEIGHTED = 'upstreams-reweighted';
const ENDPOINTS_PER_UPSTREAM = 10;
const APPLY_TIMEOUT_MS = 180_000;

function endpointsOf(upstreamIndex: number, weight: number): Endpoint[] {
  return Array.from({ length: ENDPOINTS_PER_UPSTREAM }, (_, i) => {
    const n = upstreamIndex * ENDPOINTS_PER_UPSTREAM + i;
    return { id: `node-${n}/svc-${upstreamIndex}-sidecar-proxy`, node: `node-${n}`, address: `127.2.${Math.floor(n / 250)}.${(n % 250) + 1}`, port: 21000, weight };
  });
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const upstreamCount = ctx.profile.name === 'full' ? 1_000 : 100;
  const servers = upstreamCount * ENDPOINTS_PER_UPSTREAM;
  const base = await mkdtemp(join(tmpdir(), 'hc-bench-upstreams-'));
  const [publicPort, ...bindPorts] = await freePorts(upstreamCount + 1);
  const upstreams = bindPorts.map((port, i) => upstream(`svc-${i}`, { localBindPort: port, protocol: i % 2 === 0 ? 'http' : 'tcp' }));
  const queries: UpstreamQuery[] = upstreams.map((u) => ({ destinationName: u.destinationName, destinationNamespace: 'default', datacenter: '' }));
  const consul = new FakeConsulAgentApi();
  consul.setProxyServices([{ id: 'web-sidecar-proxy', name: 'web-sidecar-proxy', tags: [], destinationServiceId: 'web', destinationServiceName: 'web' }]);
  consul.setRegistration(snapshot({ listener: { bindAddress: '127.0.0.1', bindPort: publicPort as number }, upstreams }).registration as ProxyRegistration);
  consul.setLeaf('web', webLeaf());
  consul.setRoots(roots());
  queries.forEach((q, i) => consul.setEndpoints(q, endpointsOf(i, 1)));

  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n')) if (l !== '') lines.push({ ...JSON.parse(l) as object, at: performance.now() }); cb(); } });
  const after = (msg: string, since: number): Record<string, unknown> | undefined => lines.find((l) => l.msg === msg && (l.at as number) > since);
  const heapBefore = process.memoryUsage().heapUsed;
  const shutdown = new AbortController();
  let t0 = performance.now();
  const done = runSidecar(webSidecarConfig(consul, base, { haproxyBin: 'haproxy', logLevel: 'info' }), shutdown.signal, { logger: createLogger('info', sink), consul });
  try {
    const ready = await waitFor(`${upstreamCount} upstreams ready`, async () => after('sidecar ready', 0), APPLY_TIMEOUT_MS, 5);
    const readyMs = (ready.at as number) - t0;
    const runDir = lines.find((l) => l.msg === 'created run directory')?.runDir as string;
    const procs = parseShowProc(await sendCommand(join(runDir, MASTER_SOCKET), 'show proc', { timeoutMs: 5_000 }));
    const haproxyRss = [procs.master.pid, ...procs.workers.filter((w) => !w.old).map((w) => w.pid)].reduce((sum, p) => sum + rssKiB(p), 0) / 1024;
    const heapMiB = (process.memoryUsage().heapUsed - heapBefore) / 1024 / 1024;
    t0 = performance.now();
    queries.forEach((q, i) => consul.setEndpoints(q, endpointsOf(i, 2)));
    const reweighted = await waitFor(`${servers} weights applied`, async () => {
      const batch = lines.filter((l) => l.msg === 'applied runtime changes' && (l.at as number) > t0);
      const ops = batch.reduce((sum, l) => sum + ((l.ops as number | undefined) ?? 0), 0);
      return ops >= servers ? batch.at(-1) : after('reloading haproxy', t0);
    }, APPLY_TIMEOUT_MS, 5);
    const reweightedMs = (reweighted.at as number) - t0;
    const memory = `HAProxy RSS ${haproxyRss.toFixed(0)} MiB, daemon heap +${heapMiB.toFixed(0)} MiB`;
    ctx.log(`${NAME}: ${upstreamCount} upstreams × ${ENDPOINTS_PER_UPSTREAM} endpoints ready in ${readyMs.toFixed(0)} ms; all ${servers} reweighted in ${reweightedMs.toFixed(0)} ms (${reweighted.msg as string}); ${memory}`);
    return [
      summarize(READY, `daemon start -> ${upstreamCount} upstreams with ${servers} TLS endpoints live; ${memory}`, [readyMs], 0, 0),
      summarize(REWEIGHTED, `weights of all ${servers} endpoints of ${upstreamCount} upstreams change -> live (${reweighted.msg as string})`, [reweightedMs], 0, 0),
    ];
  } finally {
    shutdown.abort(new Error('bench case done'));
    await done.catch((err: unknown) => ctx.log(`${NAME}: sidecar: ${String(err)}`));
    await rm(base, { recursive: true, force: true });
  }
}

export const upstreamScale: ControlPlaneCase = { name: NAME, produces: [READY, REWEIGHTED], repeats: () => 1, run };
