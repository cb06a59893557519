/**
 * CPU time and memory of the processes under test, read from /proc. CPU comes from
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds on the CPU, per thread), summed over every thread
 * of every process of a component, so multi-threaded processes (Node, Go, HAProxy) count fully.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { descendants } from '../../devtools/proc.js';

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback; // the process or thread exited between listing and reading
  }
}

/** Nanoseconds on the CPU so far for all threads of `pid`. */
export function processCpuNs(pid: number): number {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  let total = 0;
  for (const tid of tasks) {
    const first = readOr(`/proc/${pid}/task/${tid}/schedstat`, '0').split(' ')[0] ?? '0';
    total += Number(first);
  }
  return total;
}

/** A process and all its live descendants (a haproxy-connect daemon and its HAProxy master and workers). */
export function processTree(pid: number): number[] {
  return [pid, ...descendants(pid)];
}

export function cpuNsOf(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + processCpuNs(pid), 0);
}

/** A KiB field of /proc/<pid>/status or /proc/<pid>/smaps_rollup (`VmRSS`, `RssAnon`, `Pss`, ...), 0 if the process is gone. */
export function procKiB(pid: number, file: 'status' | 'smaps_rollup', field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readOr(`/proc/${pid}/${file}`, ''));
  return match?.[1] === undefined ? 0 : Number(match[1]);
}

/** Resident set size in KiB (`VmRSS`), 0 if the process is gone. */
export function rssKiB(pid: number): number {
  return procKiB(pid, 'status', 'VmRSS');
}

export function commandName(pid: number): string {
  return readOr(`/proc/${pid}/comm`, '?').trim();
}

/** The 1-minute load average, to tell an idle machine from a busy one in the results. */
export function loadAverage(): number {
  return Number(readOr('/proc/loadavg', '0').split(' ')[0]);
}

/** Busy and total jiffies over all CPUs, from /proc/stat. */
export function cpuJiffies(): { busy: number; total: number } {
  const fields = (readOr('/proc/stat', 'cpu 0').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: total - idle, total };
}
