/**
 * The label values and event shapes of haproxy-connect's metrics (metrics.ts): every label takes
 * its values from one of the fixed sets here, so a series can never be created from data.
 */
import type { ProcessState, RuntimeOpKind, RuntimeOpStatus } from '../domain/haproxy.js';
import type { AuthorizationDecision } from '../domain/intentions.js';
import type { DroppedItem, SnapshotEvent } from '../domain/snapshot.js';

export const METRIC_PREFIX = 'haproxy_connect_';

/** Consul watch kinds: the part of a watch name before ':' (watches.ts names them `upstream:<key>`, ...). */
export const WATCH_KINDS = ['registration', 'leaf', 'roots', 'intentions', 'chain', 'upstream', 'other'] as const;
export type WatchKind = (typeof WATCH_KINDS)[number];
export const WATCH_STATES = ['ok', 'failing', 'pending'] as const;

/** Every supervisor state, so the state gauge keeps one series per state (0 or 1). */
export const HAPROXY_STATES: Record<ProcessState, true> = {
  stopped: true,
  starting: true,
  running: true,
  reloading: true,
  stopping: true,
  crashed: true,
};
export const RUNTIME_OP_KINDS: Record<RuntimeOpKind, true> = {
  'add-server': true,
  'remove-server': true,
  'set-weight': true,
  'set-address': true,
  'set-leaf': true,
  'set-intentions-epoch': true,
  'set-split-weights': true,
};
export const RUNTIME_OP_RESULTS: Record<RuntimeOpStatus, string> = { ok: 'ok', failed: 'failed', 'pending-deletion': 'pending' };
export const DECISION_RESULTS: ReadonlyArray<AuthorizationDecision['result']> = ['allow', 'deny', 'l7', 'error', 'request_allow', 'request_deny'];
export const APPLY_METHODS = ['reload', 'runtime'] as const;

/** A decision takes microseconds (a cache lookup); the slow end catches a blocked event loop. */
export const DECISION_BUCKETS_SECONDS = [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05];
/** Runtime batches take about a millisecond; a reload with `haproxy -c` tens to hundreds. */
export const APPLY_BUCKETS_SECONDS = [0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const MS_PER_SECOND = 1_000;
export const US_PER_SECOND = 1_000_000;

export interface BuildInfo {
  version: string;
  haproxyVersion: string;
  nodeVersion: string;
}

/** What the metrics read when scraped. Each returns the current value; none may throw. */
export interface MetricsSources {
  ready(): boolean;
  haproxyState(): ProcessState;
  /** ISO-8601 expiry of the current leaf (Consul's ValidBefore). */
  leafValidBefore(): string;
  /** Number of CA roots in the trust bundle. */
  caRoots(): number;
  /** Names of the Consul watches running now (watches.ts). */
  runningWatches(): readonly string[];
  /** The SPOE agent's counters, undefined when intentions are not enforced. */
  spoe(): { connections: number; protocolErrors: number; handlerErrors: number } | undefined;
}

export function watchKind(watchName: string): WatchKind {
  // Watches of upstream targets (`target:<id>`) are reported as `upstream`, as before targets existed.
  const prefix = watchName.startsWith('target:') ? 'upstream' : (watchName.split(':', 1)[0] ?? '');
  return (WATCH_KINDS as readonly string[]).includes(prefix) ? (prefix as WatchKind) : 'other';
}

export const EVENT_WATCH: Record<SnapshotEvent['kind'], WatchKind | undefined> = {
  registration: 'registration',
  leaf: 'leaf',
  roots: 'roots',
  intentions: 'intentions',
  chain: 'chain',
  'target-endpoints': 'upstream',
  'target-removed': undefined,
  // The mesh config entry's watch (`mesh`) has no kind of its own: watchKind reports it as `other`.
  mesh: 'other',
  // The watch of the service's checks rerouted through Proxy.Expose (`exposed-checks:<id>`).
  'exposed-checks': 'other',
};

export const DROPPED_KINDS: ReadonlyArray<DroppedItem['kind']> = ['upstream', 'endpoint', 'target', 'root', 'expose', 'setting'];

/**
 * What the reconcile loop tells the metrics (src/reconcile/reconciler.ts calls these through its
 * ReconcileObserver, which this class fits; defined here so telemetry imports no other layer).
 */
export interface ActivatedEvent {
  outcome: 'started' | 'reloaded' | 'deferred' | 'failed';
  reasons: readonly string[];
  durationMs: number;
}
export interface RuntimeAppliedEvent {
  results: ReadonlyArray<{ op: { kind: RuntimeOpKind }; status: RuntimeOpStatus }>;
  durationMs: number;
}
export interface DroppedEvent {
  current: readonly DroppedItem[];
  added: readonly DroppedItem[];
}
