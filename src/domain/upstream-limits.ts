/**
 * An upstream's circuit breakers (`limits`) and outlier detection (`passive_health_check`), as
 * Consul v1.16.2 reads them from the upstream's Config (structs/config_entry.go UpstreamLimits,
 * PassiveHealthCheck) and with the defaults Envoy applies when Consul leaves a field unset
 * (agent/xds/clusters.go makeThresholdsIfNeeded, config.go ToOutlierDetection). Plain data.
 */

/** Envoy's circuit-breaker default for each threshold. */
export const ENVOY_DEFAULT_CIRCUIT_BREAKER = 1024;

export interface UpstreamLimits {
  /** `max_connections`: connections to the upstream at once. */
  maxConnections: number;
  /** `max_pending_requests`: HTTP requests waiting for a connection. */
  maxPendingRequests: number;
  /** `max_concurrent_requests`: HTTP requests in flight at once. */
  maxConcurrentRequests: number;
}

export const DEFAULT_UPSTREAM_LIMITS: Readonly<UpstreamLimits> = {
  maxConnections: ENVOY_DEFAULT_CIRCUIT_BREAKER,
  maxPendingRequests: ENVOY_DEFAULT_CIRCUIT_BREAKER,
  maxConcurrentRequests: ENVOY_DEFAULT_CIRCUIT_BREAKER,
};

export interface PassiveHealthCheck {
  /** `interval`: Envoy's sweep interval (default 10 s); an ejected host returns at the first sweep after its ejection time. */
  intervalMs: number;
  /** `max_failures`: consecutive 5xx (or connection failures) that eject an instance (default 5). */
  maxFailures: number;
  /** `enforcing_consecutive_5xx`: the chance (%) that a detected outlier is ejected (default 100). */
  enforcingConsecutive5xx: number;
  /** `max_ejection_percent`: the most of the upstream's instances ejected at once (default 10, at least one). */
  maxEjectionPercent: number;
  /** `base_ejection_time`: how long an ejected instance stays out (default 30 s; Envoy multiplies it by the ejection count). */
  baseEjectionTimeMs: number;
}

/** Envoy's outlier-detection defaults: what `passive_health_check {}` means. */
export const DEFAULT_PASSIVE_HEALTH_CHECK: Readonly<PassiveHealthCheck> = {
  intervalMs: 10_000,
  maxFailures: 5,
  enforcingConsecutive5xx: 100,
  maxEjectionPercent: 10,
  baseEjectionTimeMs: 30_000,
};
