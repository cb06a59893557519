/**
 * Control-plane case "CA rotation": Consul's Connect CA is rotated to a new root (which re-issues
 * every leaf) while a keep-alive probe runs through a source → destination pair. Figures per
 * rotation: from the CA write to both sidecars serving a leaf of the new CA; probe requests that
 * failed meanwhile (0 is the goal); and the HAProxy reloads each rotation cost the pair's two
 * sidecars (the ones started with the driver under test), reported per sidecar. Rotations in a row,
 * before Consul prunes the older roots, chain their cross-signatures and the trust bundle keeps every
 * other root of the chain (src/translate/trust-bundle.ts): the first rotation changes only the leaves
 * (0), the second adds a root (1), the third only leaves again (0), and so on. The full profile runs
 * two (the third is the integration suite's, test/integration/live-updates.test.ts); Consul's jitter makes
 * each take 10–30 s of the full run's 10 minutes. The result's `reloads` is the pair's total. With
 * DATAPLANEAPI_BIN the case runs twice (native, then dataplane): the second run's rotations follow
 * the first run's, so its counts are shifted by them.
 * The convergence time is mostly the Consul agent's own: after a root change it waits a random
 * jitter (up to 30 s, `caChangeJitterWindow` in Consul's agent/leafcert) before re-signing each leaf,
 * to spread the load on the servers.
 * Runs last: every sidecar of the testbed gets new roots and leaves.
 */
import { rotateConnectCa } from '../../devtools/certs.js';
import { waitFor } from '../../devtools/ports.js';
import { servedCertificate } from '../../devtools/probes.js';
import { masterReloadsBinding } from '../lib/run-dirs.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { type MeshPair, startMeshPair } from './mesh-pair.js';

const NAME = 'ca-rotation';
const ROTATED = 'ca-rotated';
const CONVERGENCE_TIMEOUT_MS = 60_000;
/** The probe keeps running this long after both sidecars serve the new leaf (old workers finishing). */
const SETTLE_MS = 2_000;

/** Sum of the reload counters of the pair's two sidecars (by their public ports). */
async function pairReloads(runBase: string, pair: MeshPair): Promise<number> {
  let reloads = 0;
  for (const port of [pair.sourcePublicPort, pair.destinationPublicPort]) reloads += await masterReloadsBinding(runBase, port);
  return reloads;
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const { agent, runBase } = ctx.testbed;
  const pair = await startMeshPair(ctx, 'ca');
  const { probe } = pair;
  let probing = true;
  const background = (async () => {
    while (probing) await probe.get();
  })();
  try {
    const baseline = { requests: probe.requests, failed: probe.failed };
    const samplesMs: number[] = [];
    /** Reloads of both sidecars together, rotation by rotation. */
    const pairReloadCounts: number[] = [];
    for (let i = 0; i < ctx.repeats; i++) {
      const before = await pairReloads(runBase, pair);
      const written = performance.now();
      const { activeRoot } = await rotateConnectCa(agent, CONVERGENCE_TIMEOUT_MS);
      for (const port of [pair.destinationPublicPort, pair.sourcePublicPort]) {
        await waitFor(
          `the sidecar on ${port} to serve a leaf of the new CA`,
          async () => ((await servedCertificate(port))?.issuer === activeRoot.subject ? true : undefined),
          CONVERGENCE_TIMEOUT_MS,
          20,
        );
      }
      samplesMs.push(performance.now() - written);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const after = await pairReloads(runBase, pair);
      pairReloadCounts.push(after - before);
      ctx.log(`${NAME}: ${i + 1}/${ctx.repeats} new leaves served after ${samplesMs.at(-1)?.toFixed(0)} ms; probe ${probe.failed - baseline.failed} failed of ${probe.requests - baseline.requests}`);
    }
    // The first rotation changes only leaves; a rotation before Consul pruned the previous old root
    // chains a new bridge onto a bridged root, which changes the bundle (one reload).
    const reloads = pairReloadCounts.map((r) => (r / 2).toFixed(2)).join(', ');
    const description = `CA write -> both sidecars serve a leaf of the new CA (includes Consul's re-signing jitter); reloads per sidecar, rotation by rotation: ${reloads}`;
    ctx.log(`${NAME}: ${description}`);
    const total = pairReloadCounts.reduce((sum, r) => sum + r, 0);
    return [{ ...summarize(ROTATED, description, samplesMs, probe.requests - baseline.requests, probe.failed - baseline.failed), reloads: total }];
  } finally {
    probing = false;
    await background;
    await pair.close();
  }
}

export const caRotation: ControlPlaneCase = { name: NAME, produces: [ROTATED], repeats: (p) => (p.name === 'full' ? 2 : 1), run };
