/** What a control-plane case is given and what it returns. */
import type { ProcessRegistry } from '../lib/procs.js';
import type { Profile } from '../profile.js';
import type { Testbed } from '../testbed.js';

export interface ControlPlaneContext {
  testbed: Testbed;
  registry: ProcessRegistry;
  profile: Profile;
  /** Repetitions to run (`repeatsOf(case, profile)`). */
  repeats: number;
  log(line: string): void;
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
