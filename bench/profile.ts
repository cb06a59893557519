/** The two benchmark profiles: `full` (about 10 minutes on 2 cores) and `quick` (a CI smoke test). */

export interface Profile {
  name: 'full' | 'quick';
  /** Discarded load before every measured run (the same generator and settings). */
  warmupS: number;
  /** Length of every measured run. */
  durationS: number;
  /** 2 = each workload runs the paths in order, then in reverse (A B B A); 1 = once. */
  rounds: 1 | 2;
  /** Closed-loop connections for wrk. */
  wrkConnections: number;
  /** Open-loop rate for latency percentiles and CPU per request: below every path's saturation. */
  fixedRateQps: number;
  fixedRateConnections: number;
  /**
   * Open-loop rate with a new connection per request (the cost of a new mTLS connection and its
   * authorization): below the slowest path's `Connection: close` saturation (Consul's proxy, ~150/s).
   */
  newConnectionQps: number;
  /** Repetitions of each control-plane case. */
  controlPlaneRepeats: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  full: {
    name: 'full',
    warmupS: 2,
    durationS: 5,
    rounds: 2,
    wrkConnections: 50,
    fixedRateQps: 2_000,
    fixedRateConnections: 8,
    newConnectionQps: 100,
    controlPlaneRepeats: 100,
  },
  quick: {
    name: 'quick',
    warmupS: 1,
    durationS: 2,
    rounds: 1,
    wrkConnections: 50,
    fixedRateQps: 500,
    fixedRateConnections: 4,
    newConnectionQps: 50,
    controlPlaneRepeats: 5,
  },
};

/** Core 0 runs the load generators (and this orchestrator); core 1 runs everything under test. */
export const GENERATOR_CORE = 0;
export const SUT_CORE = 1;
