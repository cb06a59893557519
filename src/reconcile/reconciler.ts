/**
 * The reconcile loop: whenever the snapshot changes, translate it (pure), plan against what is
 * applied (pure), and apply — runtime API operations when only endpoints or the leaf changed, a
 * checked, hitless reload when the structure changed. Bursts are coalesced: the loop always works
 * on the newest snapshot and the producers never wait for it. A bad update is logged with its
 * reason and the last good configuration keeps serving; bad data about one item (an instance, an
 * upstream, a root) leaves that item out and everything else keeps updating. On a slow timer the
 * live state is read back and any drift is repaired. `run` rejects only when the very first
 * snapshot leaves no safe configuration at all (a start error).
 */
import { performance } from 'node:perf_hooks';
import { errorMessage, isHaproxyConnectError } from '../errors.js';
import { findDrift } from '../haproxy/drift.js';
import type { HaproxyDriver } from '../driver/driver.js';
import type { HaproxyModel } from '../haproxy/model.js';
import { plan, runtimeSubset, sameModelFiles } from '../haproxy/plan.js';
import { render } from '../haproxy/render.js';
import { describeOp, type RuntimeOp } from '../haproxy/runtime-ops.js';
import type { SnapshotState } from '../snapshot/fold.js';
import type { Logger } from '../logger.js';
import { translate, type ReservedListener } from '../translate/translate.js';
import { DroppedItemLog } from './dropped-items.js';
import { type PortProbe, probePort, unbindableExposedPorts } from './exposed-ports.js';
import { ReloadQuiet } from './reload-quiet.js';
import type { ReconcileObserver, ReconcileStats } from './observer.js';

export type { ReconcileObserver, ReconcileStats } from './observer.js';

/** After a failed apply that may be transient (HAProxy start/reload), try again after this delay. */
export const RETRY_APPLY_MS = 2_000;
/** Servers HAProxy would not delete yet (connections still attached) are retried this often. */
export const PENDING_DELETE_RETRY_MS = 1_000;
/**
 * A new upstream's first endpoints are waited for this long before its listener is configured,
 * so the reload that adds it carries its servers (one reload, not a reload and a runtime batch).
 */
export const UPSTREAM_FIRST_ANSWER_WAIT_MS = 3_000;
/** While an exposed path's port cannot be bound, it is tried again this often. */
export const EXPOSED_PORT_RETRY_MS = 10_000;
/** How often the live state is read back and compared with what was applied. */
export const DRIFT_CHECK_INTERVAL_MS = 30_000;

export interface ReconcilerOptions {
  state: SnapshotState;
  /** Carries out the plan: the native driver or the Data Plane API driver. */
  driver: HaproxyDriver;
  runDir: string;
  logger: Logger;
  driftCheckIntervalMs?: number;
  /** Told what each apply did (metrics). */
  observer?: ReconcileObserver;
  /** HAProxy's `hard-stop-after` (at least the shutdown grace period); translate's default when absent. */
  hardStopAfterMs?: number;
  /** Ports exposed paths must not take (the daemon's -stats-addr). */
  reservedListeners?: readonly ReservedListener[];
  /** Tries whether a new exposed path's port can be bound (default: a plain listen, exposed-ports.ts). */
  probePort?: PortProbe;
}

interface Applied {
  model: HaproxyModel;
  text: string;
}

export class Reconciler {
  readonly #opts: ReconcilerOptions;
  readonly stats: ReconcileStats = { reloads: 0, runtimeBatches: 0, runtimeOps: 0, driftRepairs: 0, failedApplies: 0 };
  #dirty = true;
  #driftDue = false;
  #pendingRetryDue = false;
  #wake: (() => void) | undefined;
  #applied: Applied | undefined;
  readonly #firstApplied: { promise: Promise<void>; resolve: () => void };
  #retryTimer: NodeJS.Timeout | undefined;
  #pendingTimer: NodeJS.Timeout | undefined;
  #upstreamWaitTimer: NodeJS.Timeout | undefined;
  #exposedPortTimer: NodeJS.Timeout | undefined;
  #quiet = new ReloadQuiet();
  #quietTimer: NodeJS.Timeout | undefined;
  /** When each target still without endpoints was first seen (performance.now()). */
  readonly #awaitingUpstreams = new Map<string, number>();
  /** `backend/server` names in maintenance that HAProxy would not delete yet. */
  readonly #pendingDeletion = new Map<string, RuntimeOp>();
  /** Items left out of the last translation, by `<kind> <item>`, with their reason. */
  readonly #droppedLog: DroppedItemLog;

  constructor(opts: ReconcilerOptions) {
    this.#opts = opts;
    this.#droppedLog = new DroppedItemLog(opts.logger);
    let resolve = (): void => {};
    const promise = new Promise<void>((r) => (resolve = r));
    this.#firstApplied = { promise, resolve };
  }

  /** Marks the snapshot as changed; the loop picks up the newest state. Never blocks. */
  notify(): void {
    this.#quiet.changed(performance.now());
    this.#poke();
  }

  #poke(): void {
    this.#dirty = true;
    this.#wake?.();
  }

  /** Reads the live state back soon (after HAProxy restarted from the file on disk, say). */
  checkDriftSoon(): void {
    this.#driftDue = true;
    this.notify();
  }

  /** Resolves once a first configuration is live. */
  get firstApplied(): Promise<void> {
    return this.#firstApplied.promise;
  }

  async run(signal: AbortSignal): Promise<void> {
    const onAbort = (): void => this.#wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    const driftTimer = setInterval(() => {
      this.#driftDue = true;
      this.notify();
    }, this.#opts.driftCheckIntervalMs ?? DRIFT_CHECK_INTERVAL_MS);
    try {
      while (!signal.aborted) {
        if (!this.#dirty) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
          this.#wake = undefined;
          continue;
        }
        this.#dirty = false;
        await this.#reconcileOnce(signal);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      clearInterval(driftTimer);
      clearTimeout(this.#retryTimer);
      clearTimeout(this.#pendingTimer);
      clearTimeout(this.#upstreamWaitTimer);
      clearTimeout(this.#exposedPortTimer);
      clearTimeout(this.#quietTimer);
    }
  }

  async #reconcileOnce(signal: AbortSignal): Promise<void> {
    const { state, logger, runDir } = this.#opts;
    const snapshot = state.snapshot();
    if (snapshot === undefined) {
      logger.debug({ missing: state.missing() }, 'waiting for a complete snapshot');
      return;
    }
    if (this.#waitForUpstreams()) return;
    // Exposed paths on ports another process holds are left out (translate says why), not written.
    const unbindable = await unbindableExposedPorts(snapshot, this.#applied?.model, this.#opts.probePort ?? probePort);
    clearTimeout(this.#exposedPortTimer);
    if (unbindable.length > 0) this.#exposedPortTimer = setTimeout(() => this.#poke(), EXPOSED_PORT_RETRY_MS);
    let model: HaproxyModel;
    let text: string;
    try {
      const reservedListeners = [...(this.#opts.reservedListeners ?? []), ...unbindable];
      const translation = translate(snapshot, {
        runDir,
        ...(this.#opts.hardStopAfterMs !== undefined && { hardStopAfterMs: this.#opts.hardStopAfterMs }),
        ...(reservedListeners.length > 0 && { reservedListeners }),
      });
      const added = this.#droppedLog.report(translation.dropped);
      if (added !== undefined) this.#opts.observer?.dropped({ current: translation.dropped, added });
      model = translation.model;
      // translate returns a validated model; render validates again before it writes anything.
      text = render(model);
    } catch (err) {
      // Nothing was ever applied and this snapshot leaves no safe configuration: a start error.
      if (this.#applied === undefined && isHaproxyConnectError(err, 'MODEL_INVALID')) throw err;
      logger.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot translate the snapshot; keeping the last good configuration');
      return;
    }
    try {
      await this.#reconcileModel(model, text, signal);
    } catch (err) {
      if (signal.aborted) return;
      this.stats.failedApplies++;
      logger.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'applying the configuration failed; the last good configuration keeps serving');
      await this.#restoreLastGood();
      await this.#applyRuntimeSubset(model, signal);
      if (!(isHaproxyConnectError(err, 'HAPROXY_CONFIG_REJECTED') || isHaproxyConnectError(err, 'MODEL_INVALID'))) {
        clearTimeout(this.#retryTimer);
        this.#retryTimer = setTimeout(() => this.notify(), RETRY_APPLY_MS);
      }
    }
  }

  async #reconcileModel(model: HaproxyModel, text: string, signal: AbortSignal): Promise<void> {
    const previous = this.#applied;
    if (previous === undefined) {
      await this.#reload(model, text, ['initial configuration'], signal);
      return;
    }
    const running = this.#opts.driver.state === 'running';
    // Only when the retry timer fired: a change must never wait behind deletions HAProxy refuses.
    if (running && this.#pendingRetryDue && this.#pendingDeletion.size > 0) await this.#retryPendingDeletions(signal);
    if (running && this.#driftDue) {
      this.#driftDue = false;
      const drift = await this.#readDrift(previous.model, signal);
      if (drift.length > 0) {
        this.stats.driftRepairs++;
        this.#opts.logger.warn({ drift }, 'haproxy drifted from the applied configuration; repairing with a reload');
        await this.#reload(
          model,
          text,
          drift.map((d) => `drift: ${d}`),
          signal,
        );
        return;
      }
    }
    const planned = plan(previous.model, model);
    const limits = this.#runtimeLimits(planned);
    // What this driver cannot do at runtime is a reload, with the driver's reason.
    const decision: typeof planned = planned.kind === 'runtime' && limits.length > 0 ? { kind: 'reload', reasons: limits } : planned;
    if (decision.kind === 'none') {
      if (previous.text !== text || !sameModelFiles(previous.model, model)) this.#opts.driver.persist(model, text);
      this.#applied = { model, text };
      return;
    }
    if (decision.kind === 'runtime' && running) {
      const failures = await this.#applyRuntime(decision.ops, signal);
      if (failures.length === 0) {
        this.#opts.driver.persist(model, text);
        this.#applied = { model, text };
        return;
      }
      await this.#reload(
        model,
        text,
        failures.map((f) => `runtime update failed: ${f}`),
        signal,
      );
      return;
    }
    const reasons = decision.kind === 'reload' ? decision.reasons : [`haproxy is ${this.#opts.driver.detail}`];
    // What needs no reload goes live now, not after the quiet period and the reload: the intentions
    // epoch above all, or connections that ask the agent again would get the new intentions while
    // the others keep the old verdict until the new worker runs.
    if (decision.kind === 'reload' && running) await this.#applyRuntimeSubset(model, signal, 'applied the changes that need no reload before the reload');
    const wait = decision.kind === 'reload' && running ? this.#quiet.wait(performance.now()) : 0;
    if (wait > 0) {
      clearTimeout(this.#quietTimer);
      this.#quietTimer = setTimeout(() => this.#poke(), wait);
      return;
    }
    await this.#reload(model, text, reasons, signal);
  }

  /**
   * What of `desired` needs no reload (servers of unchanged backends, the leaf, the intentions
   * epoch) goes live at once: before a reload, and after a failed one, so one change that cannot
   * be applied does not hold up the others (the structural part is retried on the retry timer).
   */
  async #applyRuntimeSubset(desired: HaproxyModel, signal: AbortSignal, done = 'applied the changes that need no reload; the rest waits for the retry'): Promise<void> {
    const previous = this.#applied;
    if (previous === undefined || this.#opts.driver.state !== 'running' || signal.aborted) return;
    const partial = runtimeSubset(previous.model, desired);
    const decision = plan(previous.model, partial);
    if (decision.kind !== 'runtime' || this.#runtimeLimits(decision).length > 0) return;
    try {
      const failures = await this.#applyRuntime(decision.ops, signal);
      if (failures.length > 0) return;
      const text = render(partial);
      this.#applied = { model: partial, text };
      this.#opts.driver.persist(partial, text);
      this.#opts.logger.info({ ops: decision.ops.length }, done);
    } catch (err) {
      this.#opts.logger.error({ err: errorMessage(err) }, 'applying the changes that need no reload failed too');
    }
  }

  /** The driver's reasons why some of a runtime plan's ops need a reload (one line per kind). */
  #runtimeLimits(decision: ReturnType<typeof plan>): string[] {
    const driver = this.#opts.driver;
    if (decision.kind !== 'runtime' || driver.runtimeLimits === undefined) return [];
    return driver.runtimeLimits(decision.ops).map((limit) => `the ${driver.name} driver: ${limit}`);
  }

  /** True while the first endpoints of a new upstream's targets are awaited (bounded by UPSTREAM_FIRST_ANSWER_WAIT_MS). */
  #waitForUpstreams(): boolean {
    const now = performance.now();
    const missing = this.#opts.state.targetsWithoutAnswer();
    for (const key of this.#awaitingUpstreams.keys()) if (!missing.includes(key)) this.#awaitingUpstreams.delete(key);
    if (missing.length === 0) return false;
    let earliest = Infinity;
    for (const key of missing) {
      const since = this.#awaitingUpstreams.get(key) ?? now;
      this.#awaitingUpstreams.set(key, since);
      earliest = Math.min(earliest, since);
    }
    const remaining = earliest + UPSTREAM_FIRST_ANSWER_WAIT_MS - now;
    if (remaining <= 0) return false;
    this.#opts.logger.debug({ targets: missing, waitMs: Math.round(remaining) }, 'waiting for the first endpoints of new upstreams');
    clearTimeout(this.#upstreamWaitTimer);
    this.#upstreamWaitTimer = setTimeout(() => this.notify(), remaining);
    return true;
  }

  /** Applies ops over one runtime API session; returns the failures (empty when all went well). */
  async #applyRuntime(planned: RuntimeOp[], signal: AbortSignal): Promise<string[]> {
    const startedAt = performance.now();
    const ops = planned.flatMap((op) => this.#reviveInsteadOfAdd(op));
    this.#opts.logger.debug({ ops: ops.length, kinds: countKinds(ops) }, 'applying runtime changes');
    const results = await this.#opts.driver.applyRuntime(ops, signal);
    const failures = results.filter((r) => r.status === 'failed').map((r) => `${describeOp(r.op)}: ${errorMessage(r.error)}`);
    for (const result of results) {
      if (result.status === 'pending-deletion' && result.op.kind === 'remove-server') {
        this.#pendingDeletion.set(`${result.op.backend}/${result.op.server}`, result.op);
      }
    }
    this.stats.runtimeBatches++;
    this.stats.runtimeOps += ops.length;
    this.#opts.observer?.runtimeApplied({ results, durationMs: performance.now() - startedAt });
    this.#opts.logger.info(
      {
        ops: ops.length,
        kinds: countKinds(ops),
        durationMs: Math.round((performance.now() - startedAt) * 100) / 100,
        pendingDeletions: this.#pendingDeletion.size,
        failures: failures.length > 0 ? failures : undefined,
      },
      'applied runtime changes',
    );
    this.#schedulePendingRetry();
    return failures;
  }

  /**
   * A server still in maintenance waiting for deletion cannot be added again ("Already exists a
   * server with the same name"): bring it back instead, at its (possibly new) address and weight.
   */
  #reviveInsteadOfAdd(op: RuntimeOp): RuntimeOp[] {
    if (op.kind !== 'add-server') return [op];
    const key = `${op.backend}/${op.server.name}`;
    if (!this.#pendingDeletion.delete(key)) return [op];
    const { name, address, port, weight } = op.server;
    return [
      { kind: 'set-address', backend: op.backend, server: name, address, port },
      { kind: 'set-weight', backend: op.backend, server: name, weight },
    ];
  }

  async #retryPendingDeletions(signal: AbortSignal): Promise<void> {
    const ops = [...this.#pendingDeletion.values()];
    const results = await this.#opts.driver.applyRuntime(ops, signal);
    for (const result of results) {
      if (result.op.kind !== 'remove-server') continue;
      const key = `${result.op.backend}/${result.op.server}`;
      if (result.status === 'ok') this.#pendingDeletion.delete(key);
      else if (result.status === 'failed') {
        // Gone already (or never there): nothing left to delete.
        this.#pendingDeletion.delete(key);
        this.#opts.logger.debug({ server: key, err: errorMessage(result.error) }, 'pending deletion dropped');
      }
    }
    this.#schedulePendingRetry();
  }

  #schedulePendingRetry(): void {
    clearTimeout(this.#pendingTimer);
    this.#pendingRetryDue = false;
    if (this.#pendingDeletion.size > 0) {
      this.#pendingTimer = setTimeout(() => {
        this.#pendingRetryDue = true;
        this.notify();
      }, PENDING_DELETE_RETRY_MS);
    }
  }

  async #readDrift(applied: HaproxyModel, signal: AbortSignal): Promise<string[]> {
    const live = await this.#opts.driver.readLive(applied, signal);
    return findDrift(applied, live.servers, live.leafSerial, new Set(this.#pendingDeletion.keys()));
  }

  /** Writes files and the configuration, checks it, then starts or reloads HAProxy. */
  async #reload(model: HaproxyModel, text: string, reasons: string[], signal: AbortSignal): Promise<void> {
    const { driver, logger } = this.#opts;
    switch (driver.state) {
      case 'stopped':
        logger.info({ reasons, driver: driver.name }, 'starting haproxy');
        break;
      case 'running':
        logger.info({ reasons, driver: driver.name }, 'reloading haproxy');
        break;
      default:
        logger.info({ reasons, haproxyState: driver.detail }, 'writing the configuration; haproxy picks it up when it restarts');
    }
    const startedAt = performance.now();
    const outcome = await driver.activate(model, text, signal).catch((err: unknown) => {
      if (!signal.aborted) this.#opts.observer?.activated({ outcome: 'failed', reasons, durationMs: performance.now() - startedAt });
      throw err;
    });
    this.#opts.observer?.activated({ outcome, reasons, durationMs: performance.now() - startedAt });
    if (outcome === 'reloaded') this.stats.reloads++;
    // A reload (or restart) drops servers left in maintenance.
    this.#pendingDeletion.clear();
    this.#applied = { model, text };
    this.#firstApplied.resolve();
  }

  /** Puts the files of the live configuration back, so a restart serves what is live now. */
  async #restoreLastGood(): Promise<void> {
    const last = this.#applied;
    if (last === undefined) return;
    try {
      await this.#opts.driver.restore(last.model, last.text);
    } catch (err) {
      this.#opts.logger.error({ err: errorMessage(err) }, 'cannot restore the files of the last good configuration');
    }
  }

  /** Resolves when the run directory matches the live configuration (tests, shutdown). */
  async diskFlushed(): Promise<void> {
    await this.#opts.driver.flushed();
  }
}

function countKinds(ops: readonly RuntimeOp[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const op of ops) counts[op.kind] = (counts[op.kind] ?? 0) + 1;
  return counts;
}
