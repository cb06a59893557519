/**
 * Data-plane workloads, run in the order of the profile's plan (profile.ts `plannedRuns`: each
 * workload in rounds over its paths, A B … / … B A, so slow drifts of the machine hit every path
 * alike):
 *   keep-alive        wrk, closed loop at saturation, persistent client connections
 *   connection-close  wrk with `Connection: close`: a new client connection per request
 *   fixed-rate        fortio, open loop at a fixed rate: latency percentiles, CPU per request of each
 *                     component (schedstat around the run) and memory after it
 *   new-connection    fortio, open loop at a lower rate with a new connection per request: latency
 *                     percentiles and CPU per connection of each component (a full mTLS handshake
 *                     between the sidecars and, at a destination that enforces intentions, one
 *                     decision of its SPOE agent)
 *   tail              fortio, the fixed-rate settings for a long run (full profile only): p99.9 and
 *                     the maximum, which a few seconds per round cannot show
 */
import { runFortio, runWrk, type FixedRateResult, type SaturationResult } from './lib/load-tools.js';
import { commandName, cpuNsOf, rssKiB } from './lib/proc-stats.js';
import { GENERATOR_CORE, type PlannedRun, type Profile, type Workload } from './profile.js';
import type { PathUnderTest } from './testbed.js';

export { WORKLOADS, type Workload } from './profile.js';

export interface ComponentCpu {
  role: string;
  cpuMs: number;
  usPerRequest: number;
}

export interface ComponentMemory {
  role: string;
  processes: Array<{ pid: number; command: string; rssKiB: number }>;
}

export interface DataPlaneRun {
  path: string;
  workload: Workload;
  round: number;
  saturation?: SaturationResult;
  fixedRate?: FixedRateResult;
  /** Fixed-rate and new-connection runs: each component's CPU over the measured run, per request served. */
  cpu?: ComponentCpu[];
  memory?: ComponentMemory[];
  /** Wall time of the run with its warm-up and the generators' start-up (where the time goes). */
  elapsedS?: number;
}

/** Runs `load` and reads each component's on-CPU time (schedstat) around it, per request it served. */
async function withCpu(path: PathUnderTest, load: () => Promise<FixedRateResult>): Promise<{ result: FixedRateResult; cpu: ComponentCpu[] }> {
  const before = path.components.map((c) => cpuNsOf(c.pids()));
  const result = await load();
  const after = path.components.map((c) => cpuNsOf(c.pids()));
  const served = Math.max(1, result.requests);
  const cpu = path.components.map((c, i) => {
    const ns = (after[i] ?? 0) - (before[i] ?? 0);
    return { role: c.role, cpuMs: ns / 1e6, usPerRequest: ns / 1e3 / served };
  });
  return { result, cpu };
}

async function measure(path: PathUnderTest, workload: Workload, profile: Profile, round: number, signal: AbortSignal): Promise<DataPlaneRun> {
  const core = GENERATOR_CORE;
  const durationS = profile.durationS[workload];
  if (workload === 'new-connection' || workload === 'tail') {
    const fortio = (seconds: number): Promise<FixedRateResult> =>
      runFortio({
        core,
        url: path.url,
        qps: workload === 'tail' ? profile.fixedRateQps : profile.newConnectionQps,
        durationS: seconds,
        connections: profile.fixedRateConnections,
        keepAlive: workload === 'tail',
        signal,
      });
    await fortio(profile.warmupS);
    if (workload === 'tail') return { path: path.name, workload, round, fixedRate: await fortio(durationS) };
    const { result: fixedRate, cpu } = await withCpu(path, () => fortio(durationS));
    return { path: path.name, workload, round, fixedRate, cpu };
  }
  if (workload !== 'fixed-rate') {
    const wrk = (seconds: number): Promise<SaturationResult> =>
      runWrk({
        core,
        url: path.url,
        durationS: seconds,
        connections: profile.wrkConnections,
        connectionClose: workload === 'connection-close',
        signal,
      });
    await wrk(profile.warmupS);
    return { path: path.name, workload, round, saturation: await wrk(durationS) };
  }
  const fortio = (seconds: number): Promise<FixedRateResult> =>
    runFortio({
      core,
      url: path.url,
      qps: profile.fixedRateQps,
      durationS: seconds,
      connections: profile.fixedRateConnections,
      signal,
    });
  await fortio(profile.warmupS);
  const { result: fixedRate, cpu } = await withCpu(path, () => fortio(durationS));
  const memory = path.components.map((c) => ({
    role: c.role,
    processes: c.pids().map((pid) => ({ pid, command: commandName(pid), rssKiB: rssKiB(pid) })),
  }));
  return { path: path.name, workload, round, fixedRate, cpu, memory };
}

/**
 * Runs `planned` (profile.ts `plannedRuns` of the profile over `paths`) in order; `onRun` sees each
 * result as it lands (progress output).
 */
export async function runDataPlane(
  paths: readonly PathUnderTest[],
  planned: readonly PlannedRun[],
  profile: Profile,
  signal: AbortSignal,
  onRun: (run: DataPlaneRun) => void,
): Promise<DataPlaneRun[]> {
  const runs: DataPlaneRun[] = [];
  for (const { path: name, workload, round } of planned) {
    signal.throwIfAborted();
    const path = paths.find((p) => p.name === name);
    if (path === undefined) throw new Error(`planned run over unknown path '${name}' (testbed paths: ${paths.map((p) => p.name).join(', ')})`);
    const started = performance.now();
    const run = await measure(path, workload, profile, round, signal);
    run.elapsedS = (performance.now() - started) / 1000;
    runs.push(run);
    onRun(run);
  }
  return runs;
}
