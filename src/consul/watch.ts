/**
 * The blocking-query loop, written once (after consul-template watch/view.go, Consul
 * api/watch/plan.go and Consul's "Blocking Queries" implementation notes):
 * - an index that goes backwards resets the cursor to 0 (restart the loop with a fresh read);
 * - after a response the index is at least 1, so a buggy index 0 never turns into a busy loop;
 * - a return with the same cursor, or equal data, is not a change;
 * - errors are reported and retried with capped exponential backoff and full jitter, keeping the
 *   cursor (the caller keeps serving its last good value); a success resets the attempts;
 * - identical returns are rate limited, and the loop stops promptly when the signal aborts.
 */
import { isDeepStrictEqual } from '../builtins.js';
import { toError } from '../errors.js';
import type { Cursor, Versioned } from './api.js';

export const BACKOFF_BASE_MS = 250;
export const BACKOFF_MAX_MS = 30_000;
/** Minimum pause after a return that changed nothing (guards against servers that never block). */
export const MIN_BLOCKING_INTERVAL_MS = 50;

export interface WatchOptions<T> {
  /** For the caller's logs; not used by the loop itself. */
  name: string;
  fetch: (cursor: Cursor, signal: AbortSignal) => Promise<Versioned<T>>;
  onValue: (value: T) => void;
  onError: (err: Error, attempt: number) => void;
  /**
   * `onValue` threw: the value is dropped (not retried; the next change is delivered as usual) and
   * the loop goes on. Without this hook the error goes to `onError` with attempt 0.
   */
  onValueError?: (err: Error) => void;
  /** Every answer, changed or not (watch health in metrics). */
  onSuccess?: () => void;
  signal: AbortSignal;
  /** Default: deep equality (node:util isDeepStrictEqual). */
  equals?: (a: T, b: T) => boolean;
  /** Waits `ms` or until `signal` aborts (resolving or rejecting then). Default: a cleared timer. */
  delay?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Source of jitter in [0, 1). */
  random?: () => number;
  backoff?: { baseMs: number; maxMs: number };
  /** For sources that do not block (prepared queries): the pause between fetches. */
  pollIntervalMs?: number;
}

/** Resolves after `ms`, or as soon as `signal` aborts; the timer and listener are always released. */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Full-jitter exponential backoff: uniform in [0, min(max, base * 2^(attempt-1))]. */
export function backoffMs(attempt: number, random: () => number, baseMs = BACKOFF_BASE_MS, maxMs = BACKOFF_MAX_MS): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const ceiling = Math.min(maxMs, baseMs * 2 ** exponent);
  return Math.floor(random() * ceiling);
}

/** True when `next` carries a blocking position equal to `sent` (a source without one never matches). */
function sameCursor(sent: Cursor, next: Cursor): boolean {
  const hasPosition = next.index !== undefined || (next.hash ?? '') !== '';
  return hasPosition && (sent.index ?? 0) === (next.index ?? 0) && (sent.hash ?? '') === (next.hash ?? '');
}

/**
 * Runs `fetch` in a loop until `signal` aborts, calling `onValue` for the first value and for every
 * change. Resolves when the signal aborts; rejects only if `onError` throws (an `onValue` that
 * throws is reported through `onValueError` and the loop goes on).
 */
export async function runWatch<T>(opts: WatchOptions<T>): Promise<void> {
  const { signal } = opts;
  const equals = opts.equals ?? isDeepStrictEqual;
  const delay = opts.delay ?? abortableDelay;
  const random = opts.random ?? Math.random;
  const baseMs = opts.backoff?.baseMs ?? BACKOFF_BASE_MS;
  const maxMs = opts.backoff?.maxMs ?? BACKOFF_MAX_MS;

  let cursor: Cursor = {};
  let last: { value: T } | undefined;
  let attempt = 0;

  const pause = async (ms: number): Promise<void> => {
    try {
      await delay(ms, signal);
    } catch (err) {
      // An injected delay may reject on abort; any other rejection is a bug worth surfacing.
      if (!signal.aborted) throw err;
    }
  };

  while (!signal.aborted) {
    let result: Versioned<T>;
    try {
      result = await opts.fetch(cursor, signal);
    } catch (err) {
      if (signal.aborted) break;
      attempt += 1;
      opts.onError(toError(err), attempt);
      await pause(backoffMs(attempt, random, baseMs, maxMs));
      continue;
    }
    if (signal.aborted) break;
    attempt = 0;
    opts.onSuccess?.();

    const sent = cursor;
    const next: Cursor = { ...result.cursor };
    const previousIndex = sent.index ?? 0;
    if (next.index !== undefined && next.index < previousIndex) {
      // The index went backwards (snapshot restore, a removed KV item, ...): restart with a fresh read.
      cursor = { ...next, index: 0 };
      await pause(MIN_BLOCKING_INTERVAL_MS);
      continue;
    }
    // Index 0 is a Consul bug that would make every following request return at once.
    if (next.index !== undefined && next.index < 1) next.index = 1;
    cursor = next;

    const unchangedCursor = last !== undefined && sameCursor(sent, next);
    const changed = !unchangedCursor && (last === undefined || !equals(last.value, result.value));
    if (changed) {
      last = { value: result.value };
      try {
        opts.onValue(result.value);
      } catch (err) {
        // A consumer's bug must not end the watch (or, as an unhandled rejection, the process).
        if (opts.onValueError !== undefined) opts.onValueError(toError(err));
        else opts.onError(toError(err), 0);
      }
    }
    if (opts.pollIntervalMs !== undefined) await pause(opts.pollIntervalMs);
    // Pause only when the query came back without moving (a wait timeout, or a server answering
    // at once): a moved index with equal data blocked legitimately, and pausing there would delay
    // the next real change by up to MIN_BLOCKING_INTERVAL_MS (seen in the convergence benchmark).
    else if (unchangedCursor) await pause(MIN_BLOCKING_INTERVAL_MS);
  }
}
