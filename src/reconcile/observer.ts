/** What the reconcile loop tells its observers (metrics, logs, tests). */
import type { ActivateOutcome } from '../driver/driver.js';
import type { OpResult } from '../driver/runtime-apply.js';
import type { DroppedItem } from '../domain/snapshot.js';

/** What the loop applied, as it happens. Called synchronously; must not throw. */
export interface ReconcileObserver {
  /** A start, reload or deferred write finished, or failed; with the planned reasons. */
  activated(event: { outcome: ActivateOutcome | 'failed'; reasons: readonly string[]; durationMs: number }): void;
  /** A batch of runtime operations was applied. */
  runtimeApplied(event: { results: readonly OpResult[]; durationMs: number }): void;
  /** Items left out of the configuration (bad data from Consul): all of them now, and those new since the last translate. */
  dropped(event: { current: readonly DroppedItem[]; added: readonly DroppedItem[] }): void;
}

/** Counters for logs, tests and (later) metrics. */
export interface ReconcileStats {
  reloads: number;
  runtimeBatches: number;
  runtimeOps: number;
  driftRepairs: number;
  failedApplies: number;
}
