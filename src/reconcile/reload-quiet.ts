/**
 * A reload waits for a short quiet period after the last snapshot change, so a burst of Consul
 * config-entry writes (a resolver, a splitter and a router written one after another, each
 * recompiling the chain) becomes one reload, not one per write. Runtime changes never wait. PURE
 * (the caller passes the clock).
 */

/** Quiet needed since the last change before a reload starts. */
export const RELOAD_QUIET_MS = 150;
/** A reload waits at most this long in all, even while changes keep coming. */
export const RELOAD_QUIET_MAX_MS = 1_000;

export class ReloadQuiet {
  readonly #quietMs: number;
  readonly #maxMs: number;
  #lastChange = Number.NEGATIVE_INFINITY;
  #dueSince: number | undefined;

  constructor(quietMs = RELOAD_QUIET_MS, maxMs = RELOAD_QUIET_MAX_MS) {
    this.#quietMs = quietMs;
    this.#maxMs = maxMs;
  }

  /** The snapshot changed at `now` (ms). */
  changed(now: number): void {
    this.#lastChange = now;
  }

  /** Milliseconds a reload due at `now` should still wait; 0: reload now. */
  wait(now: number): number {
    this.#dueSince ??= now;
    const quietLeft = this.#quietMs - (now - this.#lastChange);
    const maxLeft = this.#maxMs - (now - this.#dueSince);
    if (quietLeft <= 0 || maxLeft <= 0) {
      this.#dueSince = undefined;
      return 0;
    }
    return Math.ceil(Math.min(quietLeft, maxLeft));
  }
}
