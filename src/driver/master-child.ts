/**
 * One HAProxy master as our child process: spawned in its own session (`detached`) with a minimal
 * environment (the master re-executes itself on every reload and its workers inherit it), its
 * stdout and stderr read line by line, its exit recorded once. The supervisor (process.ts) decides
 * what a run means; this only keeps track of it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { haproxyEnv } from './child-env.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Run {
  child: ChildProcess;
  pid: number;
  exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
  /** Resolves when stdout/stderr have closed (or shortly after exit if workers hold them). */
  drained: Promise<void>;
  workerPids: Set<number>;
}

/** Resolves true if the run exits within `ms`, false otherwise. */
export async function waitExit(run: Run, ms: number): Promise<boolean> {
  if (run.exitInfo) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([run.exited.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface SpawnMasterOptions {
  haproxyBin: string;
  args: readonly string[];
  cwd: string;
  onLine: (pid: number, stream: 'stdout' | 'stderr', line: string) => void;
  onError: (pid: number, err: Error) => void;
  onExit: (run: Run, info: ExitInfo) => void;
}

/** Spawns the master; HAPROXY_NOT_FOUND when the binary cannot be run, HAPROXY_START_FAILED otherwise. */
export async function spawnMaster(options: SpawnMasterOptions): Promise<Run> {
  const { haproxyBin } = options;
  const child = spawn(haproxyBin, options.args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: haproxyEnv() });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new HaproxyConnectError(code === 'ENOENT' || code === 'EACCES' ? 'HAPROXY_NOT_FOUND' : 'HAPROXY_START_FAILED', `Cannot run haproxy binary '${haproxyBin}': ${errorMessage(err)}`, {
      cause: err,
    });
  }
  child.removeAllListeners('error');
  let resolveExit: (info: ExitInfo) => void = () => undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    resolveExit = resolve;
  });
  const pid = child.pid ?? 0;
  const run: Run = { child, pid, exited, exitInfo: undefined, drained: Promise.resolve(), workerPids: new Set() };
  const streamsClosed: Array<Promise<void>> = [];
  for (const [name, stream] of [
    ['stdout', child.stdout],
    ['stderr', child.stderr],
  ] as const) {
    if (!stream) continue;
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on('line', (line) => options.onLine(pid, name, line));
    streamsClosed.push(new Promise((resolve) => lines.once('close', resolve)));
  }
  const allClosed = Promise.all(streamsClosed).then(() => undefined);
  // Workers inherit stdio; if one lingers the pipes stay open, so bound the wait after exit.
  run.drained = exited.then(() => Promise.race([allClosed, delay(200)]));
  child.on('error', (err) => options.onError(pid, err));
  child.once('exit', (code, signal) => {
    const info = { code, signal };
    run.exitInfo = info;
    resolveExit(info);
    options.onExit(run, info);
  });
  return run;
}
