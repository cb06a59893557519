/**
 * Restarts an HAProxy master that died on its own. The supervisor (src/driver/process.ts) only
 * reports the crash (`crashed`, after the old workers are reaped); when and whether to start again
 * is decided here: the first crash after a stable run restarts at once, crashes in a row back off
 * (RestartBackoff). A restart that fails is a crash too and backs off further.
 *
 * stop() cancels a pending restart and waits for one in flight, so the caller can then stop HAProxy
 * knowing nothing starts it again behind its back. The policy also checks the supervisor is still
 * `crashed` when its timer fires: a supervisor stopped meanwhile stays stopped.
 */
import { errorMessage } from '../errors.js';
import type { ProcessState } from '../domain/haproxy.js';
import { DEFAULT_RESTART_BACKOFF, RestartBackoff } from './restart-backoff.js';
import type { Logger } from '../logger.js';

/** What the supervisor reports when its master exits on its own. */
export interface Crash {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** How long that master ran before it died. */
  ranForMs: number;
}

/** The part of the supervisor the policy drives. */
export interface Restartable {
  readonly state: ProcessState;
  start(): Promise<void>;
  on(event: 'crashed', listener: (crash: Crash) => void): unknown;
  off(event: 'crashed', listener: (crash: Crash) => void): unknown;
}

export interface RestartPolicyOptions {
  target: Restartable;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  backoff?: { baseMs: number; maxMs: number };
  /** Called when a restarted master runs. */
  onRestarted?: () => void;
}

export class RestartPolicy {
  readonly #target: Restartable;
  readonly #log: RestartPolicyOptions['logger'];
  readonly #backoff: RestartBackoff;
  readonly #onRestarted: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #stopped = false;
  /** When the last restart attempt began: a restart that fails counts as a run of that length. */
  #attemptAt = 0;
  readonly #onCrash = (crash: Crash): void => this.#schedule(crash.ranForMs, crash);

  constructor(options: RestartPolicyOptions) {
    this.#target = options.target;
    this.#log = options.logger;
    this.#backoff = new RestartBackoff(options.backoff ?? DEFAULT_RESTART_BACKOFF);
    this.#onRestarted = options.onRestarted;
    this.#target.on('crashed', this.#onCrash);
  }

  /** Restarts in a row so far. */
  get attempts(): number {
    return this.#backoff.attempts;
  }

  /** Cancels a pending restart and waits for one in flight; later crashes are left alone. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#target.off('crashed', this.#onCrash);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
  }

  #schedule(ranForMs: number, crash?: Crash): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    const delayMs = this.#backoff.next(ranForMs);
    this.#log.warn(
      { component: 'restart-policy', delayMs, attempt: this.#backoff.attempts, ...(crash && { pid: crash.pid, code: crash.code, signal: crash.signal }) },
      'restarting haproxy after backoff',
    );
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#inFlight = this.#restart().finally(() => {
        this.#inFlight = undefined;
      });
    }, delayMs);
  }

  async #restart(): Promise<void> {
    if (this.#stopped || this.#target.state !== 'crashed') return;
    this.#attemptAt = Date.now();
    try {
      await this.#target.start();
      this.#log.info({ component: 'restart-policy', attempt: this.#backoff.attempts }, 'haproxy restarted');
      this.#onRestarted?.();
    } catch (err) {
      if (this.#stopped || this.#target.state !== 'crashed') return; // stopped meanwhile
      this.#log.error({ component: 'restart-policy', err: errorMessage(err) }, 'haproxy restart failed');
      this.#schedule(Date.now() - this.#attemptAt);
    }
  }
}
