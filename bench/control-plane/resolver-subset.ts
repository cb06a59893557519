/**
 * Control-plane case "resolver subset": a service-resolver's DefaultSubset flipped between two
 * subsets of the destination, through Consul's discovery chain.
 *
 * Set-up (mesh-pair.ts `startVersionedMeshPair`): `rs-src` → `rs-dst` over an HTTP upstream, with a
 * keep-alive sequential probe (probe.ts) through the source sidecar's upstream listener. `rs-dst`
 * has two instances, `rs-dst-v1` and `rs-dst-v2`, each its own app (answering `rs-dst-v1` /
 * `rs-dst-v2`) and its own haproxy-connect sidecar, registered with Meta `version=v1` / `v2` (which
 * the sidecars inherit); `rs-dst` has a `service-defaults` entry with Protocol http. Once both
 * instances answered, the resolver is written with subsets v1 and v2 (filters on
 * `Service.Meta.version`) and DefaultSubset v1, and the case waits until v1 alone answers (not
 * measured).
 *
 * Each repetition writes the resolver (`PUT /v1/config`) with the other DefaultSubset
 * (v2, v1, v2, ...) and measures, from the moment that PUT returned, until the probe is answered
 * only by the new subset, defined as: the arrival of the first of STREAK answers in a row from the
 * new subset (an answer from the old subset, or a failed request, restarts the count). So the old
 * subset may still answer in between, but not after that point within the next STREAK - 1 requests.
 * Then CHECK_REQUESTS more requests must all be answered by the new subset.
 *
 * The figure covers the whole path: Consul compiling the new chain and answering the sidecar's
 * blocking chain query, the sidecar starting the new target's health watch, and the change of
 * servers in HAProxy (a runtime change, README "Discovery chain").
 *
 * Failed requests reported: the probe's failed requests (error or non-200) from the first write on,
 * plus any answer of the CHECK_REQUESTS that did not come from the new subset (as intention-flip
 * counts a request that disagrees with a converged flip). The goal is 0.
 */
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { deleteConfigEntry, startVersionedMeshPair } from './mesh-pair.js';
import type { Probe } from './probe.js';

const NAME = 'resolver-subset';
const DESCRIPTION = 'resolver write (DefaultSubset flipped v1 <-> v2) -> only the new subset answers';
const VERSIONS = ['v1', 'v2'] as const;
const SUBSETS = Object.fromEntries(VERSIONS.map((v) => [v, { Filter: `Service.Meta.version == ${v}` }]));
/** Answers in a row from the new subset that mean it alone serves; the first of them is the measured point. */
const STREAK = 20;
/** Requests after convergence that must all come from the new subset. */
const CHECK_REQUESTS = 20;
/** Longest a single convergence may take before the case fails. */
const CONVERGENCE_TIMEOUT_MS = 30_000;

interface Convergence {
  /** `performance.now()` of the first answer of the streak. */
  at: number;
  /** `performance.now()` of the first answer from the new subset (may precede old answers). */
  firstFreshAt: number;
  /** Answers from the old subset after the first one from the new subset. */
  staleAfterFirstFresh: number;
}

/** Probes until STREAK answers in a row are `fresh`; throws after CONVERGENCE_TIMEOUT_MS. */
async function untilOnly(probe: Probe, fresh: string, stale: string): Promise<Convergence> {
  const deadline = performance.now() + CONVERGENCE_TIMEOUT_MS;
  let inARow = 0;
  let streakAt = 0;
  let firstFreshAt: number | undefined;
  let staleAfterFirstFresh = 0;
  const seen = new Map<string, number>();
  while (performance.now() < deadline) {
    const answer = await probe.get();
    const key = answer.body ?? '(failed)';
    seen.set(key, (seen.get(key) ?? 0) + 1);
    if (answer.body === fresh) {
      firstFreshAt ??= answer.at;
      if (inARow++ === 0) streakAt = answer.at;
      if (inARow >= STREAK) return { at: streakAt, firstFreshAt, staleAfterFirstFresh };
      continue;
    }
    inARow = 0;
    if (answer.body === stale && firstFreshAt !== undefined) staleAfterFirstFresh++;
    if (answer.body === undefined) await new Promise((r) => setTimeout(r, 1)); // do not spin on a refused port
  }
  throw new Error(`${NAME}: timed out after ${CONVERGENCE_TIMEOUT_MS} ms waiting for ${STREAK} answers in a row from ${fresh}; answers: ${JSON.stringify(Object.fromEntries(seen))}`);
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const { agent } = ctx.testbed;
  const pair = await startVersionedMeshPair(ctx, 'rs', VERSIONS);
  const { probe, destination } = pair;
  let resolverWritten = false;
  const writeResolver = async (defaultSubset: string): Promise<void> => {
    resolverWritten = true;
    await agent.put('/v1/config', { Kind: 'service-resolver', Name: destination, DefaultSubset: defaultSubset, Subsets: SUBSETS });
  };
  try {
    const [first, second] = VERSIONS;
    await writeResolver(first);
    await untilOnly(probe, pair.bodyOf(first), pair.bodyOf(second));
    const baseline = { requests: probe.requests, failed: probe.failed };
    const samplesMs: number[] = [];
    let disagreeing = 0;
    for (let i = 0; i < ctx.repeats; i++) {
      const [from, to] = i % 2 === 0 ? [first, second] : [second, first];
      await writeResolver(to);
      const written = performance.now();
      const converged = await untilOnly(probe, pair.bodyOf(to), pair.bodyOf(from));
      samplesMs.push(converged.at - written);
      let late = 0;
      for (let k = 0; k < CHECK_REQUESTS; k++) {
        const { body } = await probe.get();
        // A failed request is already in probe.failed.
        if (body !== undefined && body !== pair.bodyOf(to)) late++;
      }
      disagreeing += late;
      ctx.log(
        `${NAME}: ${i + 1}/${ctx.repeats} ${from} -> ${to}: only ${to} after ${samplesMs.at(-1)?.toFixed(1)} ms ` +
          `(first ${to} answer after ${(converged.firstFreshAt - written).toFixed(1)} ms, ${converged.staleAfterFirstFresh} ${from} answer(s) after it; ${late} late); ` +
          `probe ${probe.failed - baseline.failed} failed of ${probe.requests - baseline.requests}`,
      );
    }
    return [summarize(NAME, DESCRIPTION, samplesMs, probe.requests - baseline.requests, probe.failed - baseline.failed + disagreeing)];
  } finally {
    if (resolverWritten) await deleteConfigEntry(ctx, 'service-resolver', destination).catch((err: unknown) => ctx.log(`${NAME}: cleanup: ${String(err)}`));
    await pair.close();
  }
}

export const resolverSubset: ControlPlaneCase = { name: NAME, produces: [NAME], run };
