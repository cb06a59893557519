/** Process facts from /proc (Linux) and signalling that tolerates a process already gone. */
import { readFileSync, readdirSync } from 'node:fs';

export interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  /** Clock ticks after boot at which the process started: with the pid, it names one process (pids get reused). */
  startTime: string;
}

/** Reads state, parent, process group and start time of a pid from /proc (Linux). Undefined if it is gone. */
export function procStat(pid: number | 'self'): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ..." — comm may contain spaces and parens: split after the last ')'.
  // Field 3 (state) is fields[0], so field 22 (starttime) is fields[19].
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '?', ppid: Number(fields[1]), pgrp: Number(fields[2]), startTime: fields[19] ?? '' };
}

/** The argument vector of a process (/proc/<pid>/cmdline); undefined if it is gone or unreadable. */
export function procCmdline(pid: number | 'self'): string[] | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return undefined;
  }
  return parseCmdline(bytes);
}

/** Splits /proc/<pid>/cmdline (NUL-terminated arguments) into its arguments. */
export function parseCmdline(bytes: Buffer | string): string[] {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('utf8');
  const args = text.split('\0');
  if (args.at(-1) === '') args.pop();
  return args;
}

/** Pids of every process visible in /proc. */
export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number);
}

/** A zombie has exited; it only waits for its (new) parent to reap it. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X';
}

export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
