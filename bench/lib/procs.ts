/**
 * Every process the benchmark starts goes through here: pinned to a core with `taskset`, recorded
 * by pid, and stopped by pid at the end, also when a case fails or the run is interrupted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';

/** Grace period between SIGTERM and SIGKILL. */
const STOP_TIMEOUT_MS = 10_000;
/** Output kept per process, for error messages. */
const OUTPUT_TAIL_CHARS = 8_000;

export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  output(): string;
  readonly exited: Promise<void>;
}

export class ProcessRegistry {
  readonly #started: Started[] = [];

  /**
   * Starts `command` on `core` (`taskset -c core command ...`: taskset execs, so the pid is the
   * command's own pid and every thread and child inherits the affinity).
   */
  start(name: string, core: number, command: string, args: readonly string[], env: Record<string, string> = {}): Started {
    const child = spawn('taskset', ['-c', String(core), command, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    if (child.pid === undefined) throw new Error(`cannot start ${name}: ${command} ${args.join(' ')}`);
    let tail = '';
    const keep = (d: Buffer): void => {
      tail = (tail + d.toString()).slice(-OUTPUT_TAIL_CHARS);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const started: Started = { name, child, pid: child.pid, output: () => tail, exited };
    this.#started.push(started);
    return started;
  }

  /** Registers a process started elsewhere (e.g. the Consul dev agent) so it is pinned too. */
  pin(pid: number, core: number): void {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  }

  /** Stops one process: SIGTERM, then SIGKILL after the grace period. */
  async stop(started: Started): Promise<void> {
    const { child } = started;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await started.exited;
      clearTimeout(timer);
    }
    const index = this.#started.indexOf(started);
    if (index >= 0) this.#started.splice(index, 1);
  }

  /** Stops everything still running, newest first (sidecars before the apps they forward to). */
  async stopAll(): Promise<void> {
    for (const started of [...this.#started].reverse()) await this.stop(started);
  }

  /** Last resort on a hard exit: SIGKILL by pid, synchronously. */
  killAllNow(): void {
    for (const { child } of this.#started) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

/** Fails with the process's output if it has exited. */
export function assertRunning(started: Started): void {
  if (started.child.exitCode !== null || started.child.signalCode !== null) {
    throw new Error(`${started.name} (pid ${started.pid}) exited (${started.child.exitCode ?? started.child.signalCode}): ${started.output()}`);
  }
}
