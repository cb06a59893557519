/**
 * An upstream's `limits` and `passive_health_check` → its backends' circuit breaker and outlier
 * ejection (L7.md §2.5; README "Upstream limits and passive health"). PURE.
 *
 * Consul gives every target cluster of the chain the upstream's circuit breakers and outlier
 * detection (agent/xds/clusters.go): here every target backend gets them.
 */
import { DEFAULT_UPSTREAM_LIMITS } from '../domain/upstream-limits.js';
import type { Upstream } from '../domain/snapshot.js';
import type { Backend, ServerPassiveHealth } from '../haproxy/model.js';
import { modeOf } from './defaults.js';

/**
 * The shortest time an ejected server stays out: `base_ejection_time: 0` would make HAProxy
 * check a marked-down server without pause.
 */
export const MIN_EJECTION_MS = 100;
/** HAProxy reads `error-limit` as a signed int: 4294967295 wraps to -1 and is refused (measured). */
export const MAX_ERROR_LIMIT = 2_147_483_647;

/**
 * The streams a backend takes at once. TCP: `max_connections` (one upstream connection per client
 * connection). HTTP/1.1: every request in flight holds a connection, so both `max_connections`
 * and `max_concurrent_requests` bound it; HTTP/2 and gRPC multiplex requests over few
 * connections, so only `max_concurrent_requests` does. Requests over the bound get 503 at once:
 * HAProxy has no backend-wide queue, where Envoy would hold up to `max_pending_requests`.
 */
export function maxActiveOf(upstream: Upstream): number {
  const limits = upstream.limits ?? DEFAULT_UPSTREAM_LIMITS;
  switch (upstream.protocol) {
    case 'tcp':
      return limits.maxConnections;
    case 'http':
      return Math.min(limits.maxConnections, limits.maxConcurrentRequests);
    case 'http2':
    case 'grpc':
      return limits.maxConcurrentRequests;
  }
}

/**
 * Ejection after `max_failures` consecutive errors for `base_ejection_time`, or none: when the
 * upstream has no `passive_health_check`, or `enforcing_consecutive_5xx` is 0 (detected, never
 * ejected). Any other enforcing percentage ejects every time; `max_ejection_percent`, `interval`
 * and Envoy's growing ejection time have no HAProxy equivalent.
 */
export function passiveHealthOf(upstream: Upstream): ServerPassiveHealth | undefined {
  const check = upstream.passiveHealthCheck;
  if (check === undefined || check.enforcingConsecutive5xx === 0) return undefined;
  return {
    observe: modeOf(upstream.protocol) === 'http' ? 'layer7' : 'layer4',
    errorLimit: Math.min(MAX_ERROR_LIMIT, check.maxFailures),
    ejectMs: Math.max(MIN_EJECTION_MS, Math.round(check.baseEjectionTimeMs)),
  };
}

/** The fields of an upstream's backends that its limits and passive health set. */
export function backendLimits(upstream: Upstream): Pick<Backend, 'maxActive' | 'passiveHealth'> {
  const passiveHealth = passiveHealthOf(upstream);
  return { maxActive: maxActiveOf(upstream), ...(passiveHealth !== undefined && { passiveHealth }) };
}
