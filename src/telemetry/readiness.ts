/**
 * What /ready and /health answer, from a plain view of the sidecar. PURE: the stats server reads
 * the view (and probes HAProxy's stats socket for /health) and passes it in with the time.
 */
import type { ProcessState } from '../domain/haproxy.js';
import type { MissingPart } from '../domain/snapshot.js';

export interface SidecarView {
  /** Shutdown has begun (the listeners are closing or closed). */
  shuttingDown: boolean;
  /** A first configuration was applied (HAProxy started with it). */
  firstApplied: boolean;
  /** Parts of the snapshot not received yet. */
  missing: readonly MissingPart[];
  haproxyState: ProcessState;
  /** ISO-8601 expiry of the current leaf. */
  leafValidBefore: string | undefined;
  caRoots: number;
}

export interface Verdict {
  ok: boolean;
  /** One line: `ready`, `alive`, or why not. */
  reason: string;
}

/** States in which HAProxy serves traffic (a reload keeps the listeners open). */
const SERVING_STATES: ReadonlySet<ProcessState> = new Set(['running', 'reloading']);

/** 200 only while HAProxy serves with a valid leaf and CA roots. */
export function readiness(view: SidecarView, nowMs: number): Verdict {
  if (view.shuttingDown) return { ok: false, reason: 'shutting down' };
  if (!view.firstApplied) {
    const waiting = view.missing.length > 0 ? ` (waiting for ${view.missing.join(', ')} from Consul)` : '';
    return { ok: false, reason: `no configuration applied yet${waiting}` };
  }
  if (!SERVING_STATES.has(view.haproxyState)) return { ok: false, reason: `haproxy is ${view.haproxyState}` };
  // After a first configuration, parts go missing only when the proxy now fronts another service.
  if (view.missing.length > 0) return { ok: false, reason: `waiting for ${view.missing.join(', ')} from Consul (the proxy fronts another service now)` };
  if (view.leafValidBefore === undefined) return { ok: false, reason: 'no leaf certificate' };
  const expiry = Date.parse(view.leafValidBefore);
  if (Number.isNaN(expiry) || expiry <= nowMs) return { ok: false, reason: `the leaf certificate expired at ${view.leafValidBefore}` };
  if (view.caRoots === 0) return { ok: false, reason: 'no CA roots' };
  return { ok: true, reason: 'ready' };
}

/**
 * 200 while the daemon and HAProxy are alive: the process serves (running or reloading) and its
 * stats socket answered. `probeError` is undefined when it answered.
 */
export function liveness(view: Pick<SidecarView, 'haproxyState'>, probeError: string | undefined): Verdict {
  if (!SERVING_STATES.has(view.haproxyState)) return { ok: false, reason: `haproxy is ${view.haproxyState}` };
  if (probeError !== undefined) return { ok: false, reason: `haproxy does not answer on its stats socket: ${probeError}` };
  return { ok: true, reason: 'alive' };
}
