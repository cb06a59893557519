/**
 * HTTP routes of an upstream, as Consul's compiled discovery chain gives them to Envoy: the
 * service-router's routes in order (the catch-all last), each to one destination or to the legs of
 * a service-splitter, each leg to a resolver's targets (the primary first, then failover). PURE
 * data and arithmetic; the HAProxy rendering lives in haproxy/, the parsing in consul/.
 *
 * Semantics are Envoy's as Consul 1.16.2 configures it (../shared/L7.md §2.1-2.3):
 * - a path prefix is matched against the path with its query, an exact path and a regex against
 *   the path alone, raw (never decoded or normalised);
 * - a header matcher reads every occurrence of the header joined with ','; a missing header never
 *   matches, except `present` with `invert`; `invert` applies only to a header that is there;
 * - a query parameter matcher reads the first occurrence of the name (`name` alone has value '');
 * - regexes are RE2 and must match the whole value.
 */
/** Hash inputs of a consistent-hash load balancer (ring_hash, maglev), in order. */
export interface HashPolicy {
  source: { kind: 'header' | 'cookie' | 'query_parameter'; name: string } | { kind: 'source_ip' };
  /** Stop after this policy when it produced a value. */
  terminal: boolean;
}

/** A service-resolver's LoadBalancer. */
export interface LoadBalancer {
  policy: 'round_robin' | 'least_request' | 'random' | 'ring_hash' | 'maglev';
  /** least_request: instances drawn per pick (Envoy's default 2). */
  choiceCount: number;
  hashPolicies: readonly HashPolicy[];
}

/** How a header value (every occurrence joined with ',') is matched. */
export type ValueMatch = { kind: 'present' } | { kind: 'exact' | 'prefix' | 'suffix' | 'regex'; value: string };

export interface HeaderMatch {
  /** Lower case. */
  name: string;
  match: ValueMatch;
  invert: boolean;
}

export interface QueryParamMatch {
  name: string;
  match: { kind: 'present' } | { kind: 'exact' | 'regex'; value: string };
}

export interface RouteMatch {
  path?: { kind: 'exact' | 'prefix' | 'regex'; value: string };
  /** Upper case; empty matches every method. */
  methods: readonly string[];
  headers: readonly HeaderMatch[];
  queryParams: readonly QueryParamMatch[];
}

/** Add appends, set replaces, remove deletes; within a level: remove, then add, then set. */
export interface HeaderOps {
  add: ReadonlyArray<readonly [string, string]>;
  set: ReadonlyArray<readonly [string, string]>;
  remove: readonly string[];
}

/** What a route retries on (mapped from Consul's RetryOn, RetryOnConnectFailure and RetryOnStatusCodes). */
export interface RetryPolicy {
  /** Retries after the first attempt (Consul's NumRetries; Envoy's default 1 when unset). */
  numRetries: number;
  /** HAProxy retry-on keywords and status codes, sorted and unique; empty retries nothing. */
  on: readonly string[];
}

/** One leg of a route: a resolver (its targets in failover order) and the share of requests it takes. */
export interface RouteLeg {
  /** Out of TOTAL_SPLIT_WEIGHT (10000), computed as Consul hands weights to Envoy. */
  weight: number;
  /** Target ids: the resolver's target, then its failover targets in order. */
  targets: readonly string[];
  /** The leg's resolver's LoadBalancer; absent: round robin. */
  loadBalancer?: LoadBalancer;
  requestHeaders: HeaderOps;
  responseHeaders: HeaderOps;
}

export interface Route {
  match: RouteMatch;
  /** Replaces the matched path prefix (PathExact or PathPrefix routes only). */
  prefixRewrite?: string;
  /**
   * Envoy's route timeout: the router destination's RequestTimeout (or the start resolver's, for a
   * chain without router); absent, Envoy's default of 15 s applies.
   */
  requestTimeoutMs?: number;
  /** The router destination's IdleTimeout, if set. */
  idleTimeoutMs?: number;
  /** Absent: no retries at all (Envoy retries nothing without a route retry policy). */
  retry?: RetryPolicy;
  requestHeaders: HeaderOps;
  responseHeaders: HeaderOps;
  /** The consistent-hash inputs of the route (its next node's hash-based LoadBalancer); empty: none. */
  hashPolicies: readonly HashPolicy[];
  legs: readonly RouteLeg[];
}

/** An HTTP token (RFC 9110): what header names and methods must be. */
export const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Envoy's total weight of a route's weighted clusters (Consul sets 10000). */
export const TOTAL_SPLIT_WEIGHT = 10_000;

export const NO_HEADER_OPS: HeaderOps = { add: [], set: [], remove: [] };

/** Whether a header change list does nothing. */
export function noHeaderOps(ops: HeaderOps): boolean {
  return ops.add.length === 0 && ops.set.length === 0 && ops.remove.length === 0;
}

/**
 * Split weights as Consul 1.16.2 hands them to Envoy (agent/xds/routes.go): each float32 weight
 * times 100, truncated; what is missing to 10000 goes to the first leg. A result that does not sum
 * to 10000 (nested splitters can overshoot) is what Envoy would refuse: undefined.
 */
export function envoySplitWeights(weights: readonly number[]): number[] | undefined {
  const scaled = weights.map((w) => Math.trunc(Math.fround(Math.fround(w) * 100)));
  const sum = scaled.reduce((a, b) => a + b, 0);
  if (scaled.length === 0 || sum > TOTAL_SPLIT_WEIGHT) return undefined;
  scaled[0] = (scaled[0] as number) + (TOTAL_SPLIT_WEIGHT - sum);
  return scaled;
}

/** A route whose match takes every request: Consul's catch-all (`PathPrefix "/"` or no match). */
export function matchesEverything(match: RouteMatch): boolean {
  const path = match.path;
  return (path === undefined || (path.kind === 'prefix' && path.value === '/')) && match.methods.length === 0 && match.headers.length === 0 && match.queryParams.length === 0;
}
