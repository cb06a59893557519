/**
 * The bounds and protocol rules every translated proxy shares: Envoy's defaults as Consul
 * configures them, HAProxy's limits, and what a Consul protocol means for modes and ALPN. PURE.
 */
import type { Frontend, Mode } from '../haproxy/model.js';
import type { Protocol } from '../domain/snapshot.js';

/** Old workers get this long to finish their connections after a reload, then they are killed. */
export const DEFAULT_HARD_STOP_AFTER_MS = 30_000;

/**
 * Global maxconn when the operator gives none. An explicit maxconn makes HAProxy need about
 * 2 x maxconn file descriptors and refuse to start when the hard RLIMIT_NOFILE is lower
 * (measured: 10,000 needs 20,028 and failed under a hard limit of 20,000). 4,096 needs about
 * 8,200, below common hard limits; raise it with the maxconn option.
 */
export const DEFAULT_MAXCONN = 4_096;
/**
 * Request timeout towards an HTTP application when `local_request_timeout_ms` is absent: Consul's
 * documented default for its Envoy sidecar (Envoy's route timeout). Also used for HTTP upstreams,
 * where Envoy applies the same route default.
 */
export const DEFAULT_HTTP_REQUEST_TIMEOUT_MS = 15_000;
/** Idle timeout of TCP proxying in both directions: Envoy's tcp_proxy `idle_timeout` default (1 h). */
export const TCP_IDLE_TIMEOUT_MS = 3_600_000;
/**
 * `local_request_timeout_ms: 0` means "no timeout" in Consul. HAProxy treats a zero timeout as
 * a misconfiguration (it warns and never frees a stuck connection), so use the long idle bound.
 */
export const NO_REQUEST_TIMEOUT_MS = TCP_IDLE_TIMEOUT_MS;
/** HTTP client inactivity: Envoy's `stream_idle_timeout` default (5 min). */
export const HTTP_CLIENT_IDLE_TIMEOUT_MS = 300_000;
/** Time a client has to send complete request headers (also the keep-alive idle bound). */
export const HTTP_REQUEST_HEADERS_TIMEOUT_MS = 10_000;
/**
 * HAProxy server weights range 0..256; Consul's `Weights.Passing` goes up to 65535. Weights are
 * clamped (not rescaled per backend), so one endpoint's change never rewrites its siblings'
 * weights; ratios above 256:1 are lost, which Consul deployments rarely use.
 */
export const MAX_HAPROXY_WEIGHT = 256;

/** ALPN the public listener offers: HTTP/2 first for h2 peers, HTTP/1.1 for the rest. */
const PUBLIC_ALPN_H2: readonly string[] = ['h2', 'http/1.1'];
const ALPN_HTTP1: readonly string[] = ['http/1.1'];
const ALPN_H2_ONLY: readonly string[] = ['h2'];

export function modeOf(protocol: Protocol): Mode {
  return protocol === 'tcp' ? 'tcp' : 'http';
}

export function isH2(protocol: Protocol): boolean {
  return protocol === 'http2' || protocol === 'grpc';
}

export function publicAlpn(protocol: Protocol): string[] | undefined {
  if (protocol === 'tcp') return undefined;
  return [...(isH2(protocol) ? PUBLIC_ALPN_H2 : ALPN_HTTP1)];
}

/** ALPN towards an upstream sidecar: its public listener speaks the upstream's protocol. */
export function upstreamAlpn(protocol: Protocol): string[] | undefined {
  if (protocol === 'tcp') return undefined;
  return [...(isH2(protocol) ? ALPN_H2_ONLY : ALPN_HTTP1)];
}

export function frontendTimeouts(mode: Mode): Pick<Frontend, 'timeoutClientMs' | 'timeoutHttpRequestMs'> {
  return mode === 'tcp'
    ? { timeoutClientMs: TCP_IDLE_TIMEOUT_MS, timeoutHttpRequestMs: undefined }
    : { timeoutClientMs: HTTP_CLIENT_IDLE_TIMEOUT_MS, timeoutHttpRequestMs: HTTP_REQUEST_HEADERS_TIMEOUT_MS };
}

export function clampWeight(weight: number): number {
  if (!Number.isFinite(weight)) return 1;
  return Math.min(MAX_HAPROXY_WEIGHT, Math.max(0, Math.round(weight)));
}
