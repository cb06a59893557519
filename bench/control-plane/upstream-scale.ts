/**
 * Control-plane case "upstream scale": one haproxy-connect (in process, driven by an in-process
 * fake Consul agent so that only haproxy-connect and HAProxy are measured) whose registration has
 * U upstreams with E endpoints each (full: 1,000 × 10 = 10,000 TLS servers; quick: 100 × 10):
 * - upstreams-ready: from the start of the daemon to its first configuration live (`sidecar
 *   ready`: every listener bound, every server configured);
 * - upstreams-reweighted: from the agent answers that change the weight of every endpoint of every
 *   upstream to the change being live.
 * Also reports the memory of HAProxy (RSS) and the V8 heap in use of this process (the daemon
 * and the harness: they share it).
 */
import { freePorts, waitFor } from '../../devtools/ports.js';
import type { UpstreamQuery } from '../../src/consul/api.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import type { Endpoint, ProxyRegistration } from '../../src/domain/snapshot.js';
import { roots, snapshot, upstream, webLeaf } from '../../test/helpers/fixtures.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { startInProcessSidecar } from './in-process-sidecar.js';

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
  const [publicPort, ...bindPorts] = await freePorts(upstreamCount + 1);
  const upstreams = bindPorts.map((port, i) => upstream(`svc-${i}`, { localBindPort: port, protocol: i % 2 === 0 ? 'http' : 'tcp' }));
  const queries: UpstreamQuery[] = upstreams.map((u) => ({ destinationName: u.destinationName, destinationNamespace: 'default', datacenter: '' }));
  const consul = new FakeConsulAgentApi();
  consul.setProxyServices([{ id: 'web-sidecar-proxy', name: 'web-sidecar-proxy', tags: [], destinationServiceId: 'web', destinationServiceName: 'web' }]);
  consul.setRegistration(snapshot({ listener: { bindAddress: '127.0.0.1', bindPort: publicPort as number }, upstreams }).registration as ProxyRegistration);
  consul.setLeaf('web', webLeaf());
  consul.setRoots(roots());
  queries.forEach((q, i) => {
    consul.setEndpoints(q, endpointsOf(i, 1));
  });

  let t0 = performance.now();
  const sidecar = await startInProcessSidecar(consul, 'hc-bench-upstreams-', ctx.dataplaneBin);
  const { after, lines } = sidecar;
  try {
    const ready = await sidecar.explain(waitFor(`${upstreamCount} upstreams ready`, async () => after('sidecar ready', 0), APPLY_TIMEOUT_MS, 5));
    const readyMs = ready.at - t0;
    const haproxyRss = await sidecar.haproxyRssMiB();
    // The daemon shares this process: a heap difference would be at the mercy of GC timing (it
    // came out negative), so the process's whole heap in use is reported, harness included.
    const heapMiB = process.memoryUsage().heapUsed / 1024 / 1024;
    t0 = performance.now();
    queries.forEach((q, i) => {
      consul.setEndpoints(q, endpointsOf(i, 2));
    });
    const reweighted = await sidecar.explain(
      waitFor(
        `${servers} weights applied`,
        async () => {
          const batch = lines.filter((l) => l.msg === 'applied runtime changes' && l.at > t0);
          const ops = batch.reduce((sum, l) => sum + ((l.ops as number | undefined) ?? 0), 0);
          return ops >= servers ? batch.at(-1) : after('haproxy reloaded', t0);
        },
        APPLY_TIMEOUT_MS,
        5,
      ),
    );
    const reweightedMs = reweighted.at - t0;
    const memory = `HAProxy RSS ${haproxyRss.toFixed(0)} MiB, heap in use ${heapMiB.toFixed(0)} MiB (daemon + harness)`;
    ctx.log(
      `${NAME}: ${upstreamCount} upstreams × ${ENDPOINTS_PER_UPSTREAM} endpoints ready in ${readyMs.toFixed(0)} ms; all ${servers} reweighted in ${reweightedMs.toFixed(0)} ms (${reweighted.msg as string}); ${memory}`,
    );
    return [
      summarize(READY, `daemon start -> ${upstreamCount} upstreams with ${servers} TLS endpoints live; ${memory}`, [readyMs], 0, 0),
      summarize(REWEIGHTED, `weights of all ${servers} endpoints of ${upstreamCount} upstreams change -> live (${reweighted.msg as string})`, [reweightedMs], 0, 0),
    ];
  } finally {
    await sidecar.stop((line) => ctx.log(`${NAME}: ${line}`));
  }
}

export const upstreamScale: ControlPlaneCase = { name: NAME, produces: [READY, REWEIGHTED], repeats: () => 1, run };
