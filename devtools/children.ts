/**
 * Child processes of the test and demo helpers that must not outlive this process. A helper that
 * starts a long-running child registers it; when this process exits while the child still runs
 * (a failed `before` hook that never reached its `after`), the child is sent a signal, so no agent
 * or sidecar is left behind holding ports and pipes.
 */
import type { ChildProcess } from 'node:child_process';

const live = new Map<ChildProcess, NodeJS.Signals>();
let hooked = false;

/**
 * Sends `signal` to `child` if it still runs when this process exits: SIGKILL for an agent,
 * SIGTERM for a sidecar, whose graceful shutdown then stops its HAProxy on its own.
 */
export function killOnExit(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  live.set(child, signal);
  child.once('exit', () => live.delete(child));
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const [c, sig] of live) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
  });
}

/**
 * A child that must neither outlive this process nor keep it alive: a Consul agent that a failed
 * `before` hook never stopped would otherwise hold a test file open forever through its pipes.
 * It is unreferenced (with its output pipes; they are still read while anything else runs) and
 * killed at exit. Whoever waits for it must keep the event loop alive meanwhile (a timer), as
 * waitFor's polling and stop()'s kill timer do.
 */
export function backgroundChild(child: ChildProcess): void {
  killOnExit(child);
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
}

/** True when a server failed to start because a port it was given was taken meanwhile. */
export function portTaken(err: unknown): boolean {
  return err instanceof Error && /address already in use/i.test(err.message);
}

/**
 * Runs `start` up to `attempts` times while it fails because a port was taken between
 * freePorts() and the bind (another process can take a released port), each time with new ports.
 */
export async function retryOnPortTaken<T>(start: () => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= attempts || !portTaken(err)) throw err;
    }
  }
}
