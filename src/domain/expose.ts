/**
 * Consul's `Proxy.Expose`: plain (no mTLS) listeners on the sidecar that forward exactly one HTTP
 * path each to the local application, for callers outside the mesh (a metrics scraper) and for the
 * agent's own HTTP and gRPC checks, which the agent reroutes through the sidecar when
 * `Expose.Checks` is set (Consul 1.16.2 agent/agent.go rerouteExposedChecks, agent/xds/listeners.go
 * makeExposedCheckListener).
 */

/** `Expose.Paths[].Protocol`: Consul allows http (its default) and http2. */
export type ExposeProtocol = 'http' | 'http2';
export const EXPOSE_PROTOCOLS: readonly ExposeProtocol[] = ['http', 'http2'];
export const DEFAULT_EXPOSE_PROTOCOL: ExposeProtocol = 'http';

/** The path Consul exposes for a gRPC check (agent/xds/listeners.go parseCheckPath). */
export const GRPC_HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** One exposed path: a listener on `listenerPort` forwarding `path` to the app on `localPathPort`. */
export interface ExposePath {
  /** Names the path in logs: `Expose.Paths[0]` or `check 'service:web:1'`. */
  source: string;
  listenerPort: number;
  /** Absolute, matched exactly against the request's path (without the query), raw and case-sensitive. */
  path: string;
  localPathPort: number;
  protocol: ExposeProtocol;
}

/** An item of `Proxy.Expose` left out, with the reason naming the value. */
export interface ExposeProblem {
  item: string;
  reason: string;
}

/** `Proxy.Expose` of the registration, validated. */
export interface ExposeConfig {
  /** `Expose.Checks`: serve the HTTP and gRPC checks the agent reroutes through the sidecar. */
  checks: boolean;
  paths: readonly ExposePath[];
  /** Paths of the registration that cannot be used (not absolute, a bad port or protocol). */
  refused?: readonly ExposeProblem[];
}

/**
 * An HTTP or gRPC check of the proxied service that the agent sends through the sidecar (its
 * `ExposedPort`). The agent's HTTP API does not publish the check's own URL: an HTTP check's path
 * is read from the URL the agent reports in the check's output (the rerouted URL keeps the path),
 * and is undefined until the agent has run the check once.
 */
export interface ExposedCheck {
  checkId: string;
  type: 'http' | 'grpc';
  exposedPort: number;
  path: string | undefined;
}

/** The longest path accepted (HAProxy copies a pattern into its 16 KiB trash buffer; few servers take URLs this long anyway). */
export const MAX_EXPOSE_PATH_LENGTH = 2048;
/** Control characters (CR, LF, NUL...) and spaces cannot be in a request's path on the wire. */
const NOT_IN_A_PATH = /[\x00-\x20\x7f]/;

/** Why `path` cannot be exposed (a phrase to follow the quoted value), or undefined when it can. */
export function exposePathProblem(path: string): string | undefined {
  if (path === '') return 'is empty';
  if (!path.startsWith('/')) return 'is not absolute (it must start with /)';
  if (path.length > MAX_EXPOSE_PATH_LENGTH) return `is longer than ${MAX_EXPOSE_PATH_LENGTH} characters`;
  if (NOT_IN_A_PATH.test(path)) return 'holds a space or a control character, which no request path carries';
  if (path.includes('?') || path.includes('#')) return 'holds ? or #: only the path is matched, without query or fragment';
  return undefined;
}
