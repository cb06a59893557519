/** What a control-plane case is given and what it returns. */
import type { ProcessRegistry } from '../lib/procs.js';
import type { Profile } from '../profile.js';
import type { Testbed } from '../testbed.js';

/**
 * How the sidecars under test apply changes: haproxy-connect's own driver, or the Data Plane API
 * driver (`-dataplane`), which runs.ts adds only when DATAPLANEAPI_BIN is set.
 */
export type Driver = 'native' | 'dataplane';

export interface ControlPlaneContext {
  /** Its `startHaproxyConnect` starts sidecars with `driver` (run.ts adds `-dataplane` for the dataplane run). */
  testbed: Testbed;
  registry: ProcessRegistry;
  profile: Profile;
  /** Repetitions to run (`repeatsOf(case, profile)`). */
  repeats: number;
  driver: Driver;
  /** The Data Plane API binary when `driver` is `dataplane`: an in-process sidecar needs it in its config. */
  dataplaneBin: string | undefined;
  log(line: string): void;
}

/** Memory of the Data Plane API processes of a dataplane run, sampled while the case ran (lib/dataplane-rss.ts). */
export interface DataplaneApiRss {
  /** Sidecars whose Data Plane API was seen (one per run directory; a restarted API counts once). */
  sidecars: number;
  /** Highest RSS seen, over every sidecar's API. */
  maxMiB: number;
  /** Mean over the sidecars of each one's highest RSS. */
  meanPeakMiB: number;
}

export interface ControlPlaneResult {
  case: string;
  description: string;
  /** One duration per repetition, in milliseconds, in the order measured. */
  samplesMs: number[];
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Requests of the probe that failed while the case ran (0 is the goal). */
  failedRequests: number;
  requests: number;
  /** HAProxy reloads of the sidecar under test during the repetitions, for the cases that count them. */
  reloads?: number;
  /** The driver of the sidecars under test (run.ts sets it; results without it are `native`). */
  driver?: Driver;
  /** Set for a dataplane run: what its Data Plane API processes used. */
  dataplaneApiRss?: DataplaneApiRss;
}

export interface ControlPlaneCase {
  /** Short stable name of the case. */
  name: string;
  /** Names of the results it produces: `endpoint-added`, `endpoint-removed`, ... */
  produces: readonly string[];
  /**
   * Repetitions for a profile when not the profile's `controlPlaneRepeats` (large or slow cases:
   * a scale test runs once, a CA rotation takes seconds each).
   */
  repeats?: (profile: Profile) => number;
  /**
   * The profiles whose runs include the case when no `--cases` names it (default: every profile).
   * A case too slow for the CI smoke test runs in the full profile only.
   */
  profiles?: ReadonlyArray<Profile['name']>;
  /** Sets up what it needs on the shared testbed, repeats `ctx.repeats` times, cleans up. */
  run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]>;
}

/** How many repetitions (= samples per result) `c` runs in `profile`. */
export function repeatsOf(c: ControlPlaneCase, profile: Profile): number {
  return c.repeats?.(profile) ?? profile.controlPlaneRepeats;
}

/** Whether a run of `profile` without `--cases` includes `c`. */
export function runsIn(c: ControlPlaneCase, profile: Profile): boolean {
  return c.profiles === undefined || c.profiles.includes(profile.name);
}

/** Nearest-rank percentile of `samples` (p in 0..100). Pure. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function summarize(name: string, description: string, samplesMs: number[], requests: number, failedRequests: number): ControlPlaneResult {
  return {
    case: name,
    description,
    samplesMs,
    p50Ms: percentile(samplesMs, 50),
    p99Ms: percentile(samplesMs, 99),
    maxMs: Math.max(...samplesMs),
    requests,
    failedRequests,
  };
}
