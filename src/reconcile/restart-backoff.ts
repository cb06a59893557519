/**
 * When to restart an HAProxy master that died on its own. PURE (the caller passes the time it ran).
 * The first crash after a stable run restarts at once — the outage is then HAProxy's start, about
 * 0.2 s under load (measured) — and crashes in a row back off: base, 2 x base, ... up to the cap.
 */
export const DEFAULT_RESTART_BACKOFF = { baseMs: 500, maxMs: 30_000 } as const;
/** A master that ran this long is stable: its crash starts the backoff over. */
export const STABLE_RUN_MS = 60_000;

export class RestartBackoff {
  readonly #baseMs: number;
  readonly #maxMs: number;
  #attempts = 0;

  constructor(backoff: { baseMs: number; maxMs: number } = DEFAULT_RESTART_BACKOFF) {
    this.#baseMs = backoff.baseMs;
    this.#maxMs = backoff.maxMs;
  }

  /** Restarts in a row so far (after a stable run, 0 again). */
  get attempts(): number {
    return this.#attempts;
  }

  /** The delay before the next restart, for a master that ran `ranForMs` before it died. */
  next(ranForMs: number): number {
    if (ranForMs >= STABLE_RUN_MS) this.#attempts = 0;
    const delayMs = this.#attempts === 0 ? 0 : Math.min(this.#maxMs, this.#baseMs * 2 ** (this.#attempts - 1));
    this.#attempts += 1;
    return delayMs;
  }
}
