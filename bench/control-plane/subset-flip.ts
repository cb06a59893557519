/**
 * What the "subset flip" cases share (resolver-subset, splitter-shift, router-shift): a config
 * entry written again and again so that the destination's traffic flips between its subsets v1 and
 * v2, and the time from each write to the moment only the new subset answers.
 *
 * Set-up (mesh-pair.ts `startVersionedMeshPair`): `<prefix>-src` → `<prefix>-dst` over an HTTP
 * upstream, with a keep-alive sequential probe (probe.ts) through the source sidecar's upstream
 * listener. `<prefix>-dst` has two instances, `<prefix>-dst-v1` and `<prefix>-dst-v2`, each its
 * own app (answering its instance name) and its own haproxy-connect sidecar, registered with Meta
 * `version=v1` / `v2` (which the sidecars inherit); `<prefix>-dst` has a `service-defaults` entry
 * with Protocol http. Once both instances answered, the case's set-up entries are written (e.g. a
 * resolver with the subsets), then its flip entry for v1, and the case waits until v1 alone answers
 * (not measured).
 *
 * Each repetition writes the flip entry (`PUT /v1/config`) for the other subset (v2, v1, v2, ...)
 * and measures, from the moment that PUT returned, until the probe is answered only by the new
 * subset, defined as: the arrival of the first of STREAK answers in a row from the new subset (an
 * answer from the old subset, or a failed request, restarts the count). So the old subset may still
 * answer in between, but not after that point within the next STREAK - 1 requests. Then
 * CHECK_REQUESTS more requests must all be answered by the new subset.
 *
 * Failed requests reported: the probe's failed requests (error or non-200) from the first measured
 * write on, plus any answer of the CHECK_REQUESTS that did not come from the new subset (as
 * intention-flip counts a request that disagrees with a converged flip). The goal is 0.
 *
 * Reloads: the source sidecar's HAProxy reloads during the repetitions (its
 * `haproxy_connect_config_applies_total{method="reload"}`, read before the first and SETTLE_MS after
 * the last), next to its runtime-API changes (`method="runtime"`); both go into the description and
 * the result's `reloads`. The per-flip counts in the progress lines are read right after each flip's
 * check requests: a reload the sidecar records after that shows up in the next flip's line.
 */
import { sumSamples } from '../lib/prometheus.js';
import { summarize, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { deleteConfigEntry, startVersionedMeshPair, type VersionedMeshPair } from './mesh-pair.js';

export const VERSIONS = ['v1', 'v2'] as const;
export type Version = (typeof VERSIONS)[number];
/** The resolver's subsets: one per version, by the instance's Meta. */
export const SUBSETS = Object.fromEntries(VERSIONS.map((v) => [v, { Filter: `Service.Meta.version == ${v}` }]));
/** Answers in a row from the new subset that mean it alone serves; the first of them is the measured point. */
const STREAK = 20;
/** Requests after convergence that must all come from the new subset. */
const CHECK_REQUESTS = 20;
/** Longest a single convergence may take before the case fails. */
const CONVERGENCE_TIMEOUT_MS = 30_000;
/** Wait before reading the counters: longer than a reload may wait for quiet (src/reconcile/reload-quiet.ts, 1 s at most). */
const SETTLE_MS = 1_500;
/** Characters of the source sidecar's last output line quoted when it is not a JSON log line. */
const OUTPUT_IN_ERRORS_CHARS = 500;

/** A Consul config entry as `PUT /v1/config` takes it. */
export type ConfigEntry = { Kind: string; Name: string } & Record<string, unknown>;

export interface FlipSpec {
  /** The case's name and its result's name. */
  name: string;
  description: string;
  /** Prefix of the pair's service names. */
  prefix: string;
  /** Entries written once, in order, before the first flip (e.g. a resolver with the subsets). */
  setUp(destination: string): ConfigEntry[];
  /** The entry whose write makes `version` alone serve: the measured write. */
  flipTo(destination: string, version: Version): ConfigEntry;
}

interface Convergence {
  /** `performance.now()` of the first answer of the streak. */
  at: number;
  /** `performance.now()` of the first answer from the new subset (may precede old answers). */
  firstFreshAt: number;
  /** Answers from the old subset after the first one from the new subset. */
  staleAfterFirstFresh: number;
}

/** Probes until STREAK answers in a row are `fresh`; throws after CONVERGENCE_TIMEOUT_MS. */
async function untilOnly(name: string, pair: VersionedMeshPair, fresh: string, stale: string): Promise<Convergence> {
  const { probe } = pair;
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
  throw new Error(
    `${name}: timed out after ${CONVERGENCE_TIMEOUT_MS} ms waiting for ${STREAK} answers in a row from ${fresh}; answers: ${JSON.stringify(Object.fromEntries(seen))}; ` +
      `the source sidecar's last warning or error: ${lastLogged(pair.sourceOutput())}`,
  );
}

/** The last line of a sidecar's output (it logs warnings and errors only), shortened to its message and error. */
function lastLogged(output: string): string {
  const line = output.trimEnd().split('\n').at(-1) ?? '';
  if (line === '') return '(none)';
  try {
    const { msg, err } = JSON.parse(line) as { msg?: unknown; err?: unknown };
    return `${String(msg)}${err === undefined ? '' : `: ${String(err)}`}`;
  } catch {
    return line.slice(-OUTPUT_IN_ERRORS_CHARS);
  }
}

/** The source sidecar's reloads and runtime-API changes so far. */
async function applies(pair: VersionedMeshPair): Promise<{ reloads: number; runtime: number }> {
  const text = await pair.sourceMetrics();
  const applied = 'haproxy_connect_config_applies_total';
  return { reloads: sumSamples(text, applied, { method: 'reload' }), runtime: sumSamples(text, applied, { method: 'runtime' }) };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, SETTLE_MS));

/** Runs `spec` for `ctx.repeats` flips on its own versioned mesh pair and removes what it wrote. */
export async function runSubsetFlips(ctx: ControlPlaneContext, spec: FlipSpec): Promise<ControlPlaneResult[]> {
  const { agent } = ctx.testbed;
  const { name } = spec;
  const pair = await startVersionedMeshPair(ctx, spec.prefix, VERSIONS);
  const { probe, destination } = pair;
  const written: ConfigEntry[] = [];
  const put = async (entry: ConfigEntry): Promise<void> => {
    if (!written.some((w) => w.Kind === entry.Kind && w.Name === entry.Name)) written.push(entry);
    await agent.put('/v1/config', entry);
  };
  try {
    const [first, second] = VERSIONS;
    for (const entry of spec.setUp(destination)) await put(entry);
    await put(spec.flipTo(destination, first));
    await untilOnly(name, pair, pair.bodyOf(first), pair.bodyOf(second));
    await settle();
    const start = await applies(pair);
    let previous = start;
    const baseline = { requests: probe.requests, failed: probe.failed };
    const samplesMs: number[] = [];
    let disagreeing = 0;
    for (let i = 0; i < ctx.repeats; i++) {
      const [from, to] = i % 2 === 0 ? [first, second] : [second, first];
      await put(spec.flipTo(destination, to));
      const putReturned = performance.now();
      const converged = await untilOnly(name, pair, pair.bodyOf(to), pair.bodyOf(from));
      samplesMs.push(converged.at - putReturned);
      let late = 0;
      for (let k = 0; k < CHECK_REQUESTS; k++) {
        const { body } = await probe.get();
        // A failed request is already in probe.failed.
        if (body !== undefined && body !== pair.bodyOf(to)) late++;
      }
      disagreeing += late;
      const now = await applies(pair);
      ctx.log(
        `${name}: ${i + 1}/${ctx.repeats} ${from} -> ${to}: only ${to} after ${samplesMs.at(-1)?.toFixed(1)} ms ` +
          `(first ${to} answer after ${(converged.firstFreshAt - putReturned).toFixed(1)} ms, ${converged.staleAfterFirstFresh} ${from} answer(s) after it; ${late} late); ` +
          `probe ${probe.failed - baseline.failed} failed of ${probe.requests - baseline.requests}; source reloads +${now.reloads - previous.reloads}, runtime changes +${now.runtime - previous.runtime}`,
      );
      previous = now;
    }
    await settle();
    const end = await applies(pair);
    const reloads = end.reloads - start.reloads;
    const description = `${spec.description}; source sidecar reloads: ${reloads} in ${ctx.repeats} flips (runtime changes: ${end.runtime - start.runtime})`;
    ctx.log(`${name}: ${description}`);
    return [{ ...summarize(name, description, samplesMs, probe.requests - baseline.requests, probe.failed - baseline.failed + disagreeing), reloads }];
  } finally {
    // Newest first: a splitter or router before the resolver whose subsets it names.
    for (const entry of written.reverse()) await deleteConfigEntry(ctx, entry.Kind, entry.Name).catch((err: unknown) => ctx.log(`${name}: cleanup: ${String(err)}`));
    await pair.close();
  }
}
