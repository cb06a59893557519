/**
 * Control-plane case "endpoint scale": one haproxy-connect (in process, driven by an in-process
 * fake Consul agent so that only haproxy-connect and HAProxy are measured) with one upstream:
 * - endpoints-bulk-added: from the agent answer that brings N endpoints (N = 10,000 full, 1,000
 *   quick) to HAProxy serving them (above MAX_RUNTIME_SERVER_ADDS this is a reload);
 * - endpoints-bulk-reweighted: from the answer that changes the weight of all N to the runtime
 *   batch being applied.
 * Also reports HAProxy's RSS with N TLS servers in the log.
 */
import { waitFor } from '../../devtools/ports.js';
import type { Endpoint } from '../../src/domain/snapshot.js';
import { API, fakeWebAgent } from '../../test/helpers/fake-web-agent.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { startInProcessSidecar } from './in-process-sidecar.js';

const NAME = 'endpoint-scale';
const ADDED = 'endpoints-bulk-added';
const REWEIGHTED = 'endpoints-bulk-reweighted';
const APPLY_TIMEOUT_MS = 120_000;

function endpoints(count: number, weight: number): Endpoint[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `node-${i}/api-sidecar-proxy`,
    node: `node-${i}`,
    address: `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`,
    port: 21000,
    weight,
  }));
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const count = ctx.profile.name === 'full' ? 10_000 : 1_000;
  const consul = await fakeWebAgent([]);
  const sidecar = await startInProcessSidecar(consul, 'hc-bench-scale-', ctx.dataplaneBin);
  const { after } = sidecar;
  try {
    await sidecar.explain(waitFor('sidecar ready', async () => after('sidecar ready', 0), 30_000));
    let t0 = performance.now();
    consul.setEndpoints(API, endpoints(count, 1));
    const applied = await sidecar.explain(waitFor(`${count} endpoints applied`, async () => after('haproxy reloaded', t0) ?? after('applied runtime changes', t0), APPLY_TIMEOUT_MS, 5));
    const addedMs = applied.at - t0;
    const haproxyRss = await sidecar.haproxyRssMiB();
    t0 = performance.now();
    consul.setEndpoints(API, endpoints(count, 2));
    const reweighted = await sidecar.explain(waitFor(`${count} weights applied`, async () => after('applied runtime changes', t0) ?? after('haproxy reloaded', t0), APPLY_TIMEOUT_MS, 5));
    const reweightedMs = reweighted.at - t0;
    ctx.log(
      `${NAME}: ${count} TLS endpoints added in ${addedMs.toFixed(0)} ms (${applied.msg as string}), reweighted in ${reweightedMs.toFixed(0)} ms (${reweighted.msg as string}); HAProxy RSS ${haproxyRss.toFixed(1)} MiB`,
    );
    return [
      summarize(ADDED, `${count} endpoints arrive -> HAProxy serves them (${applied.msg as string}); HAProxy RSS ${haproxyRss.toFixed(0)} MiB`, [addedMs], 0, 0),
      summarize(REWEIGHTED, `${count} endpoint weights change -> applied (${reweighted.msg as string})`, [reweightedMs], 0, 0),
    ];
  } finally {
    await sidecar.stop((line) => ctx.log(`${NAME}: ${line}`));
  }
}

export const endpointScale: ControlPlaneCase = { name: NAME, produces: [ADDED, REWEIGHTED], repeats: () => 1, run };
