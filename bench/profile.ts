/**
 * The two benchmark profiles and their data-plane plans:
 * - `full`: the figures the README quotes, in under 10 minutes on 2 cores (time budget below).
 *   Rounds go where a ratio or a floor is read: the four paths of the ratio table (RATIO_PATHS)
 *   run fixed-rate and new-connection in 4 rounds and keep-alive in 3, so each figure is a median
 *   with a range and each ratio gets a bootstrap interval; direct, the generator's floor, runs them in 2;
 *   the other paths run fixed-rate and keep-alive once; `Connection: close` runs once over
 *   PRIMARY_PATHS; the tail workload (60 s at the fixed rate: p99.9 and the maximum) runs once
 *   over TAIL_PATHS. 30 repetitions of the control-plane cases that take the profile's count.
 * - `quick`: a CI smoke test: every workload but the tail once over every path, 5 control-plane
 *   repetitions (about 4.5 minutes).
 *
 * Time budget of the full profile, native driver. The data plane is `plannedSeconds` (a unit test
 * holds it to FULL_DATA_PLANE_BUDGET_S); the control plane is what the full run of 2026-12-05 12:35 UTC
 * took (bench/run.ts prints where the time went and the results carry it), with the cuts made since:
 *   testbed start                                                                        9 s
 *   keep-alive         (1 + 2 s) × (4 ratio paths × 3 + direct × 2 + 6 others × 1 = 20)   60 s
 *   Connection: close  (1 + 2 s) × 5 primary paths × 1                                    15 s
 *   fixed-rate         (1 + 2 s) × (4 ratio paths × 4 + direct × 2 + 6 others × 1 = 24)   72 s
 *   new-connection     (1 + 2 s) × (4 ratio paths × 4 + direct × 2 = 18)                  54 s
 *   tail               (1 + 60 s) × 3 paths                                              183 s
 *   generators' start-up and /proc reads, ~0.17 s × 70 runs                               12 s
 *   control plane: endpoint-churn 7, intention-flip 7, l7-source-move 9, resolver-subset 8,
 *     splitter-shift 9 (30 flips of 50–120 ms each), l7-permission-change ~11 (10 reloads of
 *     ~0.7 s), router-shift ~10 (10 reloads), endpoint-scale 11 (10,000 endpoints), upstream-scale
 *     11 (1,000 upstreams), intention-scale 36 (full only), ca-rotation ~50 (2 rotations; Consul's
 *     re-signing jitter of up to 30 s moves it by ±20 s)                                ~169 s
 *   total                                                                      ~574 s ≈ 9.6 min
 * Not in it: daemon-memory (quick profile and `make bench-memory` only), and the second pass of every
 * case with DATAPLANEAPI_BIN set. The 12:35 run took 10.6 minutes (data plane 408 s, control plane
 * 219 s, ca-rotation 74 s of it with 3 rotations); the cuts that brought it under 10: keep-alive 4 -> 3
 * rounds over the ratio paths (its req/s is no target; CPU and latency come from the fixed-rate and
 * new-connection rounds, which keep 4), the two reload cases 30 and 20 -> 10 repetitions, and
 * 3 -> 2 rotations (the third, which reloads nothing, is checked by the integration suite).
 * Where the time came from: the old plan ran every workload twice over all 10 paths (80 runs of
 * 2 + 5 s = 560 s); 4 rounds of everything would be 160 runs. The tails cost 3 minutes that no
 * round can share. Control-plane repetitions 100 -> 30 saved only ~30 s: a flip takes 50–120 ms.
 * Each round is short (2 s: 4,000 requests at the fixed rate, 200 new connections), which the
 * median over 4 rounds makes up for; the ranges in the tables show what a round is worth.
 */

export const WORKLOADS = ['keep-alive', 'connection-close', 'fixed-rate', 'new-connection', 'tail'] as const;
export type Workload = (typeof WORKLOADS)[number];

/**
 * The rounds of one workload over some paths. A path runs a workload as many times as the first
 * entry of that workload naming it says, or the first entry without `paths`; none = not at all.
 */
export interface RoundsEntry {
  workload: Workload;
  rounds: number;
  paths?: readonly string[];
}

export interface Profile {
  name: 'full' | 'quick';
  /** Discarded load before every measured run (the same generator and settings). */
  warmupS: number;
  /**
   * Length of every measured run, by workload (whole seconds: wrk takes nothing else); the tail's is
   * long enough for a p99.9 over 100,000 requests and a maximum that includes what happens once a minute.
   */
  durationS: Record<Workload, number>;
  /** Which paths run which workload, and how often (`plannedRuns`). */
  plan: readonly RoundsEntry[];
  /** Closed-loop connections for wrk. */
  wrkConnections: number;
  /** Open-loop rate for latency percentiles and CPU per request: below every path's saturation (also the tail's rate). */
  fixedRateQps: number;
  fixedRateConnections: number;
  /**
   * Open-loop rate with a new connection per request (the cost of a new mTLS connection and its
   * authorization): below the slowest path's `Connection: close` saturation (Consul's proxy, ~150/s).
   */
  newConnectionQps: number;
  /** Repetitions of each control-plane case (the cases with their own count: bench/control-plane/*.ts). */
  controlPlaneRepeats: number;
}

/** The paths of the ratio table: haproxy-connect's plain pairs and their hand-written references. */
export const RATIO_PATHS = ['reference-http', 'reference-tcp', 'hc-http', 'hc-tcp'] as const;
/** The ratio table's paths and direct, the generator's floor. */
export const PRIMARY_PATHS = ['direct', ...RATIO_PATHS] as const;
/** The tail workload's paths: the HTTP pair and its reference, and direct as the floor. */
export const TAIL_PATHS = ['direct', 'reference-http', 'hc-http'] as const;

/** Seconds of data plane the full profile may plan over the testbed's 11 paths (the budget above). */
export const FULL_DATA_PLANE_BUDGET_S = 384;

export const PROFILES: Record<Profile['name'], Profile> = {
  full: {
    name: 'full',
    warmupS: 1,
    durationS: { 'keep-alive': 2, 'connection-close': 2, 'fixed-rate': 2, 'new-connection': 2, tail: 60 },
    plan: [
      { workload: 'keep-alive', rounds: 3, paths: RATIO_PATHS },
      { workload: 'keep-alive', rounds: 2, paths: ['direct'] },
      { workload: 'keep-alive', rounds: 1 },
      { workload: 'connection-close', rounds: 1, paths: PRIMARY_PATHS },
      { workload: 'fixed-rate', rounds: 4, paths: RATIO_PATHS },
      { workload: 'fixed-rate', rounds: 2, paths: ['direct'] },
      { workload: 'fixed-rate', rounds: 1 },
      { workload: 'new-connection', rounds: 4, paths: RATIO_PATHS },
      { workload: 'new-connection', rounds: 2, paths: ['direct'] },
      { workload: 'tail', rounds: 1, paths: TAIL_PATHS },
    ],
    wrkConnections: 50,
    fixedRateQps: 2_000,
    fixedRateConnections: 8,
    newConnectionQps: 100,
    // 30 for endpoint-churn and intention-flip: the p99 of 30 samples is their maximum, which the
    // convergence targets (p99) are then read against.
    controlPlaneRepeats: 30,
  },
  quick: {
    name: 'quick',
    warmupS: 1,
    durationS: { 'keep-alive': 2, 'connection-close': 2, 'fixed-rate': 2, 'new-connection': 2, tail: 0 },
    plan: [
      { workload: 'keep-alive', rounds: 1 },
      { workload: 'connection-close', rounds: 1 },
      { workload: 'fixed-rate', rounds: 1 },
      { workload: 'new-connection', rounds: 1 },
    ],
    wrkConnections: 50,
    fixedRateQps: 500,
    fixedRateConnections: 4,
    newConnectionQps: 50,
    controlPlaneRepeats: 5,
  },
};

/** How many rounds of `workload` `path` runs in `profile` (0: none). Pure. */
export function roundsOf(profile: Pick<Profile, 'plan'>, workload: Workload, path: string): number {
  const entry = profile.plan.find((e) => e.workload === workload && (e.paths === undefined || e.paths.includes(path)));
  return entry?.rounds ?? 0;
}

export interface PlannedRun {
  workload: Workload;
  round: number;
  path: string;
}

/**
 * Every data-plane run of `profile` over `paths`, in the order they run: workload after workload;
 * round r over the paths that run it at least r times, in order for odd r and reversed for even
 * (A B … / … B A), so slow drifts of the machine hit every path alike. Pure.
 */
export function plannedRuns(profile: Pick<Profile, 'plan'>, paths: readonly string[]): PlannedRun[] {
  const runs: PlannedRun[] = [];
  for (const workload of WORKLOADS) {
    const rounds = Math.max(0, ...paths.map((p) => roundsOf(profile, workload, p)));
    for (let round = 1; round <= rounds; round++) {
      const these = paths.filter((p) => roundsOf(profile, workload, p) >= round);
      for (const path of round % 2 === 1 ? these : [...these].reverse()) runs.push({ workload, round, path });
    }
  }
  return runs;
}

/** Seconds `runs` take by the clock of the generators (warm-up + measured), without their start-up. Pure. */
export function plannedSeconds(profile: Pick<Profile, 'warmupS' | 'durationS'>, runs: readonly PlannedRun[]): number {
  return runs.reduce((sum, r) => sum + profile.warmupS + profile.durationS[r.workload], 0);
}

/** Core 0 runs the load generators (and this orchestrator); core 1 runs everything under test. */
export const GENERATOR_CORE = 0;
export const SUT_CORE = 1;
