/**
 * The apply step behind one narrow interface: the reconcile loop plans (pure) and a driver carries
 * the plan out. The native driver writes the run directory and talks to HAProxy's master CLI and
 * runtime API itself; the Data Plane API driver sends the same changes through the HAProxy Data
 * Plane API. Both share translate, plan and the reconcile policy (coalescing, pending deletions,
 * drift repair); only the I/O differs.
 */
import type { HaproxyModel } from '../haproxy/model.js';
import type { OpResult } from './runtime-apply.js';
import type { LiveServer } from '../haproxy/runtime-state.js';
import type { RuntimeOp } from '../haproxy/runtime-ops.js';

/** What activate() did: started a stopped HAProxy, reloaded a running one, or only wrote the files for a pending restart. */
export type ActivateOutcome = 'started' | 'reloaded' | 'deferred';

/** The live state read back for drift checks. */
export interface LiveState {
  servers: LiveServer[];
  /** Serial of the leaf HAProxy serves (upper-case hex), when it can be read. */
  leafSerial: string | undefined;
}

/** The state of the data plane as the reconcile loop needs it. */
export type DriverState = 'stopped' | 'running' | 'unavailable';

export interface HaproxyDriver {
  /** `native` or `dataplane`, for logs and metrics. */
  readonly name: string;
  /** `running`: runtime operations can be applied; `stopped`: activate() starts HAProxy; `unavailable`: restarting. */
  readonly state: DriverState;
  /** The detailed process state, for log lines. */
  readonly detail: string;
  /** Makes `model` the live configuration: files and configuration written and checked, then a start or a hitless reload. */
  activate(model: HaproxyModel, text: string, signal: AbortSignal): Promise<ActivateOutcome>;
  /**
   * Why some of `ops` cannot be applied at runtime by this driver (the reconciler reloads instead,
   * with these as the reasons); empty when all can. Absent: every op can.
   */
  runtimeLimits?(ops: readonly RuntimeOp[]): string[];
  /** Applies runtime operations in order; never throws for a refused operation (each gets a result). */
  applyRuntime(ops: readonly RuntimeOp[], signal: AbortSignal): Promise<OpResult[]>;
  /** Records that `model` is live after runtime operations, so a later reload or restart starts from it. Never throws. */
  persist(model: HaproxyModel, text: string): void;
  /** Puts the last good configuration back in place after a failed apply (best effort). */
  restore(model: HaproxyModel, text: string): Promise<void>;
  /** Reads the live servers and leaf back. */
  readLive(applied: HaproxyModel, signal: AbortSignal): Promise<LiveState>;
  /** Resolves when everything persisted has reached its destination (tests, shutdown). */
  flushed(): Promise<void>;
}
