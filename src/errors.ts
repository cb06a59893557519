/**
 * One base error with a stable string `code`. Callers branch on `code`, never on message text.
 * Every code is listed in ERROR_CODES (and documented in the README's "Errors" section).
 */
export const ERROR_CODES = {
  CONFIG_INVALID: 'a flag, environment variable or file given to haproxy-connect is invalid',
  CONSUL_UNREACHABLE: 'the Consul agent could not be reached',
  CONSUL_HTTP: 'the Consul agent answered with an HTTP error status',
  CONSUL_FORBIDDEN: 'the Consul agent rejected the ACL token (403)',
  CONSUL_RESPONSE_INVALID: 'a Consul response did not have the expected shape',
  SIDECAR_NOT_FOUND: 'no connect-proxy registration matches the requested service',
  SIDECAR_AMBIGUOUS: 'several connect-proxy registrations match the requested service',
  SIDECAR_ALREADY_RUNNING: 'another haproxy-connect already serves this proxy (same -haproxy-cfg-base-path)',
  PROXY_CONFIG_INVALID: 'a value in the proxy registration has the wrong type or range',
  SPIFFE_ID_INVALID: 'a SPIFFE ID or certificate SAN could not be parsed',
  CERTIFICATE_INVALID: 'a certificate or key from Consul could not be parsed',
  MODEL_INVALID: 'the generated HAProxy model failed validation',
  HAPROXY_NOT_FOUND: 'the haproxy binary could not be found or run',
  HAPROXY_UNSUPPORTED: 'the haproxy binary is older than the oldest version supported (2.6)',
  HAPROXY_CONFIG_REJECTED: 'haproxy -c rejected a generated configuration',
  HAPROXY_START_FAILED: 'haproxy did not start',
  HAPROXY_RELOAD_FAILED: 'haproxy did not accept a reload',
  HAPROXY_CLI: 'the HAProxy master CLI or runtime API failed',
  SPOP_FRAME_INVALID: 'a SPOP frame from HAProxy was malformed, too big or out of protocol',
  FILE_WRITE_FAILED: 'writing, removing or creating a file or directory for HAProxy failed',
  ABORTED: 'the operation was cancelled by shutdown',
  ACCESS_LOG_FAILED: 'the access log file (proxy-defaults AccessLogs.Path) could not be opened',
  SPOE_LISTEN_FAILED: 'the intentions agent (SPOE) could not listen on its socket in the run directory',
  LOG_RECEIVER_FAILED: "the receiver of HAProxy's logs could not listen on its socket in the run directory",
  STATS_LISTEN_FAILED: 'the stats server could not listen on the -stats-addr address',
  DATAPLANE_API: 'the HAProxy Data Plane API could not be reached, or refused a request (the message names what it refused)',
  DATAPLANE_UNSUPPORTED: 'the Data Plane API binary (-dataplane) is a version haproxy-connect cannot drive',
  HAPROXY_STATS_FAILED: "HAProxy's stats frontend (its metrics and health, on the stats socket in the run directory) did not answer",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class HaproxyConnectError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HaproxyConnectError';
    this.code = code;
  }
}

export function isHaproxyConnectError(err: unknown, code?: ErrorCode): err is HaproxyConnectError {
  return err instanceof HaproxyConnectError && (code === undefined || err.code === code);
}

/** Narrows an unknown thrown value to an Error, wrapping non-errors. */
export function toError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

/** The message of an unknown thrown value, for log fields. */
export function errorMessage(err: unknown): string {
  return toError(err).message;
}
