/**
 * Making sure no HAProxy worker outlives its master: wait for the known workers to exit, then
 * SIGKILL those still in the master's process group (only those: pids get reused).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { isAlive, procStat, signalPid } from './pids.js';
import type { ProcessLogger } from './haproxy-output.js';

/** How long workers get to follow their master out before they are killed. */
const WORKER_EXIT_TIMEOUT_MS = 3_000;
/** How long a SIGKILLed worker gets to go. */
export const SIGKILL_WAIT_MS = 2_000;
export const POLL_INTERVAL_MS = 25;

/** Waits for `workerPids` to exit; SIGKILLs those still in the process group of `masterPid`. */
export async function reapWorkers(workerPids: Iterable<number>, masterPid: number, log: ProcessLogger): Promise<void> {
  const deadline = Date.now() + WORKER_EXIT_TIMEOUT_MS;
  let alive = [...workerPids].filter(isAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await delay(POLL_INTERVAL_MS);
    alive = alive.filter(isAlive);
  }
  if (alive.length === 0) return;
  for (const pid of alive) {
    if (procStat(pid)?.pgrp === masterPid) {
      log.warn({ component: 'haproxy-process', pid, master: masterPid }, 'haproxy worker outlived its master; sending SIGKILL');
      signalPid(pid, 'SIGKILL');
    }
  }
  const killDeadline = Date.now() + SIGKILL_WAIT_MS;
  while (alive.some(isAlive) && Date.now() < killDeadline) await delay(POLL_INTERVAL_MS);
  const left = alive.filter(isAlive);
  if (left.length > 0) log.error({ component: 'haproxy-process', pids: left, master: masterPid }, 'haproxy workers still running after SIGKILL');
}
