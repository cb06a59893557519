/**
 * Control-plane case "intention flip", two figures over a source → destination pair with a
 * keep-alive probe (pooled connections between the sidecars, as in production):
 * - intention-denied: from the intention write (deny) returning to the first request refused;
 * - intention-allowed: from the write (allow) returning to the first request served again.
 * After each flip converged, CHECK_REQUESTS more requests must all agree with it: a request
 * served after a deny took effect, or refused after an allow did, counts as a failed request.
 * Reloads: the destination sidecar's HAProxy reloads over the flips (its master's reload counter,
 * read before the first and SETTLE_MS after the last), in both results: the goal is 0 (a flip is a
 * runtime change of the intentions epoch).
 */
import { masterReloadsBinding } from '../lib/run-dirs.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { startMeshPair } from './mesh-pair.js';

const NAME = 'intention-flip';
const DENIED = 'intention-denied';
const DENIED_DESCRIPTION = 'intention write (deny) -> first request refused';
const ALLOWED = 'intention-allowed';
const ALLOWED_DESCRIPTION = 'intention write (allow) -> first request served again';
const CONVERGENCE_TIMEOUT_MS = 30_000;
/** Requests after each convergence that must agree with the new decision. */
const CHECK_REQUESTS = 20;
/** Wait before the last reload count: longer than a reload may wait for quiet (src/reconcile/reload-quiet.ts, 1 s at most). */
const SETTLE_MS = 1_500;

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const { agent } = ctx.testbed;
  const pair = await startMeshPair(ctx, 'if');
  const path = '/v1/connect/intentions/exact?source=if-src&destination=if-dst';
  try {
    const { probe } = pair;
    const baseline = probe.requests;
    const reloadsBefore = await masterReloadsBinding(ctx.testbed.runBase, pair.destinationPublicPort);
    const deniedMs: number[] = [];
    const allowedMs: number[] = [];
    let disagreeing = 0;
    for (let i = 0; i < ctx.repeats; i++) {
      await agent.put(path, { Action: 'deny' });
      let written = performance.now();
      deniedMs.push((await probe.untilRefused('the deny to take effect', CONVERGENCE_TIMEOUT_MS)).at - written);
      disagreeing += await probe.served(CHECK_REQUESTS);
      await agent.put(path, { Action: 'allow' });
      written = performance.now();
      allowedMs.push((await probe.until('the allow to take effect', (b) => b === 'if-dst', CONVERGENCE_TIMEOUT_MS)).at - written);
      disagreeing += CHECK_REQUESTS - (await probe.served(CHECK_REQUESTS));
      ctx.log(`${NAME}: ${i + 1}/${ctx.repeats} denied ${deniedMs.at(-1)?.toFixed(1)} ms, allowed ${allowedMs.at(-1)?.toFixed(1)} ms`);
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const reloads = (await masterReloadsBinding(ctx.testbed.runBase, pair.destinationPublicPort)) - reloadsBefore;
    ctx.log(`${NAME}: destination sidecar reloads: ${reloads} in ${2 * ctx.repeats} flips`);
    const requests = probe.requests - baseline;
    return [
      { ...summarize(DENIED, DENIED_DESCRIPTION, deniedMs, requests, disagreeing), reloads },
      { ...summarize(ALLOWED, ALLOWED_DESCRIPTION, allowedMs, requests, disagreeing), reloads },
    ];
  } finally {
    await agent.fetch(path, { method: 'DELETE' }).catch((err: unknown) => ctx.log(`${NAME}: cleanup: ${String(err)}`));
    await pair.close();
  }
}

export const intentionFlip: ControlPlaneCase = { name: NAME, produces: [DENIED, ALLOWED], run };
