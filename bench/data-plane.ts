/**
 * Data-plane workloads, each run over every path in A B B A order (paths forward, then reversed) so
 * slow drifts of the machine hit every path alike:
 *   keep-alive        wrk, closed loop at saturation, persistent client connections
 *   connection-close  wrk with `Connection: close`: a new client connection per request
 *   fixed-rate        fortio, open loop at a fixed rate: latency percentiles, CPU per request of each
 *                     component (schedstat around the run) and memory after it
 */
import { runFortio, runWrk, type FixedRateResult, type SaturationResult } from './lib/load-tools.js';
import { commandName, cpuNsOf, rssKiB } from './lib/proc-stats.js';
import { GENERATOR_CORE, type Profile } from './profile.js';
import type { PathUnderTest } from './testbed.js';

export const WORKLOADS = ['keep-alive', 'connection-close', 'fixed-rate', 'new-connection'] as const;
export type Workload = (typeof WORKLOADS)[number];

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
  cpu?: ComponentCpu[];
  memory?: ComponentMemory[];
}

async function measure(path: PathUnderTest, workload: Workload, profile: Profile, round: number, signal: AbortSignal): Promise<DataPlaneRun> {
  const core = GENERATOR_CORE;
  if (workload === 'new-connection') {
    const fresh = (durationS: number): Promise<FixedRateResult> =>
      runFortio({
        core,
        url: path.url,
        qps: profile.newConnectionQps,
        durationS,
        connections: profile.fixedRateConnections,
        keepAlive: false,
        signal,
      });
    await fresh(profile.warmupS);
    return { path: path.name, workload, round, fixedRate: await fresh(profile.durationS) };
  }
  if (workload !== 'fixed-rate') {
    const wrk = (durationS: number): Promise<SaturationResult> =>
      runWrk({
        core,
        url: path.url,
        durationS,
        connections: profile.wrkConnections,
        connectionClose: workload === 'connection-close',
        signal,
      });
    await wrk(profile.warmupS);
    return { path: path.name, workload, round, saturation: await wrk(profile.durationS) };
  }
  const fortio = (durationS: number): Promise<FixedRateResult> =>
    runFortio({
      core,
      url: path.url,
      qps: profile.fixedRateQps,
      durationS,
      connections: profile.fixedRateConnections,
      signal,
    });
  await fortio(profile.warmupS);
  const before = path.components.map((c) => cpuNsOf(c.pids()));
  const fixedRate = await fortio(profile.durationS);
  const after = path.components.map((c) => cpuNsOf(c.pids()));
  const served = Math.max(1, fixedRate.requests);
  const cpu = path.components.map((c, i) => {
    const ns = (after[i] ?? 0) - (before[i] ?? 0);
    return { role: c.role, cpuMs: ns / 1e6, usPerRequest: ns / 1e3 / served };
  });
  const memory = path.components.map((c) => ({
    role: c.role,
    processes: c.pids().map((pid) => ({ pid, command: commandName(pid), rssKiB: rssKiB(pid) })),
  }));
  return { path: path.name, workload, round, fixedRate, cpu, memory };
}

/** Runs every workload over every path; `onRun` sees each result as it lands (progress output). */
export async function runDataPlane(paths: readonly PathUnderTest[], profile: Profile, signal: AbortSignal, onRun: (run: DataPlaneRun) => void): Promise<DataPlaneRun[]> {
  const runs: DataPlaneRun[] = [];
  for (const workload of WORKLOADS) {
    for (let round = 1; round <= profile.rounds; round++) {
      const order = round % 2 === 1 ? paths : [...paths].reverse();
      for (const path of order) {
        signal.throwIfAborted();
        const run = await measure(path, workload, profile, round, signal);
        runs.push(run);
        onRun(run);
      }
    }
  }
  return runs;
}
