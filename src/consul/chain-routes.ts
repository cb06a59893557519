/**
 * The HTTP routes of a compiled discovery chain (service-router, service-splitter), read as Consul
 * 1.16.2 hands them to Envoy (agent/xds/routes.go). PURE.
 *
 * What Envoy would refuse (an RE2-invalid regex, split weights that do not sum to 10000, a header
 * value with an Envoy placeholder we cannot reproduce, a header name that is not an HTTP token)
 * throws: the watch keeps the upstream's last good chain and logs why, as Envoy keeps its last
 * good routes. What only this data plane cannot do (a retry condition HAProxy has no equivalent
 * for) is reported in `refused` and left out; the rest applies.
 */
import { re2Problem } from '../domain/regex.js';
import {
  envoySplitWeights,
  HTTP_TOKEN,
  type HeaderMatch,
  type HeaderOps,
  type QueryParamMatch,
  type RetryPolicy,
  type Route,
  type RouteMatch,
  type RouteLeg,
  NO_HEADER_OPS,
  TOTAL_SPLIT_WEIGHT,
} from '../domain/routes.js';
import type { HashPolicy, LoadBalancer } from '../domain/snapshot.js';
import { HaproxyConnectError } from '../errors.js';
import { parseDurationMs } from './duration.js';
import type { DiscoveryChainJson } from './schemas.js';

type NodeJson = DiscoveryChainJson['Nodes'][string];
type RouteJson = NonNullable<NodeJson['Routes']>[number];
type DefinitionJson = RouteJson['Definition'];
type DestinationJson = NonNullable<DefinitionJson['Destination']>;
type HeaderOpsJson = DestinationJson['RequestHeaders'];

/** A resolver node as a leg: its usable targets in failover order and its LoadBalancer. */
export interface ResolvedNode {
  targets: string[];
  loadBalancer: LoadBalancer | undefined;
}

export interface RouteContext {
  /** The upstream's key, for messages. */
  upstream: string;
  chain: DiscoveryChainJson;
  /** Resolves a resolver node key (its targets are collected by the caller). */
  resolver: (nodeKey: string) => ResolvedNode;
  /** What cannot be honoured, by name (logged; the rest applies). */
  refused: string[];
}

/**
 * HAProxy `retry-on` equivalents of Envoy's retry conditions (L7.md §2.2). `retriable-status-codes`
 * only says that RetryOnStatusCodes apply.
 */
const RETRY_ON: Readonly<Record<string, readonly string[]>> = {
  'connect-failure': ['conn-failure'],
  reset: ['conn-failure', 'empty-response', 'junk-response'],
  '5xx': ['conn-failure', 'empty-response', 'junk-response', '500', '501', '502', '503', '504'],
  'gateway-error': ['conn-failure', 'empty-response', 'junk-response', '502', '503', '504'],
  'refused-stream': ['empty-response'],
  'retriable-status-codes': [],
};
/** Status codes HAProxy 2.6's `retry-on` accepts (configuration.txt §4.2 `retry-on`). */
const RETRYABLE_STATUS: ReadonlySet<number> = new Set([401, 403, 404, 408, 425, 500, 501, 502, 503, 504]);
/** Envoy's num_retries when a retry policy leaves it unset. */
const ENVOY_DEFAULT_NUM_RETRIES = 1;
/** Consistent-hash policies: only these turn a LoadBalancer's HashPolicies into a route hash. */
const HASH_BASED: ReadonlySet<string> = new Set(['ring_hash', 'maglev']);

function invalid(ctx: RouteContext, message: string): HaproxyConnectError {
  return new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `discovery chain of upstream ${ctx.upstream}: ${message}`);
}

function checkedRegex(ctx: RouteContext, where: string, pattern: string): string {
  const problem = re2Problem(pattern);
  if (problem !== undefined) throw invalid(ctx, `${where} regex ${JSON.stringify(pattern)} is not valid RE2 (Envoy refuses it): ${problem}`);
  return pattern;
}

function headerName(ctx: RouteContext, where: string, name: string): string {
  const bare = name.startsWith(':') ? name.slice(1) : name;
  if (!HTTP_TOKEN.test(bare)) throw invalid(ctx, `${where} header name ${JSON.stringify(name)} is not an HTTP token`);
  return name.toLowerCase();
}

/** A header matcher's name: `:authority` is the Host header in HAProxy; other pseudo-headers have their own matchers (path, method). */
function matchedHeaderName(ctx: RouteContext, where: string, raw: string): string {
  const name = headerName(ctx, where, raw);
  if (name === ':authority') return 'host';
  if (name.startsWith(':')) {
    throw invalid(ctx, `${where} matches the pseudo-header ${JSON.stringify(raw)}, which is not supported (match the path with PathExact, PathPrefix or PathRegex, the method with Methods)`);
  }
  return name;
}

function headerMatch(ctx: RouteContext, where: string, h: NonNullable<NonNullable<DefinitionJson['Match']>['HTTP']>['Header'][number]): HeaderMatch | undefined {
  const name = matchedHeaderName(ctx, where, h.Name);
  const invert = h.Invert;
  // Envoy's order of precedence when several are set (routes.go makeRouteMatchForDiscoveryRoute).
  if (h.Exact !== '') return { name, match: { kind: 'exact', value: h.Exact }, invert };
  if (h.Regex !== '') return { name, match: { kind: 'regex', value: checkedRegex(ctx, where, h.Regex) }, invert };
  if (h.Prefix !== '') return { name, match: { kind: 'prefix', value: h.Prefix }, invert };
  if (h.Suffix !== '') return { name, match: { kind: 'suffix', value: h.Suffix }, invert };
  if (h.Present) return { name, match: { kind: 'present' }, invert };
  return undefined; // Envoy skips a matcher with nothing set
}

function queryMatch(ctx: RouteContext, where: string, q: NonNullable<NonNullable<DefinitionJson['Match']>['HTTP']>['QueryParam'][number]): QueryParamMatch | undefined {
  if (q.Exact !== '') return { name: q.Name, match: { kind: 'exact', value: q.Exact } };
  if (q.Regex !== '') return { name: q.Name, match: { kind: 'regex', value: checkedRegex(ctx, where, q.Regex) } };
  if (q.Present) return { name: q.Name, match: { kind: 'present' } };
  return undefined;
}

function routeMatch(ctx: RouteContext, where: string, definition: DefinitionJson): RouteMatch {
  const http = definition.Match?.HTTP;
  if (http === undefined || http === null) return { methods: [], headers: [], queryParams: [] };
  let path: RouteMatch['path'];
  if (http.PathExact !== '') path = { kind: 'exact', value: http.PathExact };
  else if (http.PathPrefix !== '') path = { kind: 'prefix', value: http.PathPrefix };
  else if (http.PathRegex !== '') path = { kind: 'regex', value: checkedRegex(ctx, `${where} PathRegex`, http.PathRegex) };
  const methods = http.Methods.map((m) => {
    if (!HTTP_TOKEN.test(m)) throw invalid(ctx, `${where} method ${JSON.stringify(m)} is not an HTTP token`);
    return m.toUpperCase();
  });
  const headers = http.Header.flatMap((h, i) => headerMatch(ctx, `${where} Header[${i}]`, h) ?? []);
  const queryParams = http.QueryParam.flatMap((q, i) => queryMatch(ctx, `${where} QueryParam[${i}]`, q) ?? []);
  return { ...(path !== undefined && { path }), methods: [...new Set(methods)], headers, queryParams };
}

/**
 * A header value as Envoy's header formatter reads it: `%%` is a literal `%`; any other `%` starts
 * a placeholder (`%DOWNSTREAM_REMOTE_ADDRESS%`, …), which is not reproduced: refused.
 */
function headerValue(ctx: RouteContext, where: string, value: string): string {
  const placeholder = /%(?!%)/.exec(value.replaceAll('%%', ''));
  if (placeholder !== null) throw invalid(ctx, `${where} value ${JSON.stringify(value)} uses an Envoy placeholder (a '%' other than '%%'), which is not supported`);
  if (/[\r\n\0]/.test(value)) throw invalid(ctx, `${where} value ${JSON.stringify(value)} holds a line break or NUL`);
  return value.replaceAll('%%', '%');
}

function headerOps(ctx: RouteContext, where: string, json: HeaderOpsJson): HeaderOps {
  if (json === undefined || json === null) return NO_HEADER_OPS;
  // Envoy skips headers whose value is empty (keep_empty_value is false).
  const pairs = (record: Record<string, string> | null | undefined, what: string): Array<readonly [string, string]> =>
    Object.entries(record ?? {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .flatMap(([name, value]) => {
        const header = headerName(ctx, `${where} ${what}`, name);
        if (header.startsWith(':')) throw invalid(ctx, `${where} ${what} cannot change the pseudo-header ${JSON.stringify(name)}`);
        const v = headerValue(ctx, `${where} ${what} ${name}`, value);
        return v === '' ? [] : [[header, v] as const];
      });
  const remove = json.Remove.map((name) => headerName(ctx, `${where} Remove`, name));
  return { add: pairs(json.Add, 'Add'), set: pairs(json.Set, 'Set'), remove };
}

function durationOf(ctx: RouteContext, where: string, value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = parseDurationMs(value);
  if (ms === undefined) throw invalid(ctx, `${where} ${JSON.stringify(value)} is not a duration`);
  return ms > 0 ? Math.max(1, Math.round(ms)) : undefined;
}

/** Envoy's retry policy for a destination, or undefined when it has none (config_entry_discoverychain.go HasRetryFeatures). */
function retryPolicy(ctx: RouteContext, where: string, d: DestinationJson): RetryPolicy | undefined {
  if (!(d.NumRetries > 0 || d.RetryOnConnectFailure || d.RetryOn.length > 0 || d.RetryOnStatusCodes.length > 0)) return undefined;
  const on = new Set<string>();
  for (const condition of [...d.RetryOn, ...(d.RetryOnConnectFailure ? ['connect-failure'] : [])]) {
    const mapped = RETRY_ON[condition];
    if (mapped === undefined) ctx.refused.push(`${where} RetryOn ${JSON.stringify(condition)} has no HAProxy equivalent: not retried on`);
    else for (const k of mapped) on.add(k);
  }
  for (const code of d.RetryOnStatusCodes) {
    if (RETRYABLE_STATUS.has(code)) on.add(String(code));
    else ctx.refused.push(`${where} RetryOnStatusCodes ${code}: HAProxy retries only on ${[...RETRYABLE_STATUS].join(', ')}`);
  }
  return { numRetries: d.NumRetries > 0 ? d.NumRetries : ENVOY_DEFAULT_NUM_RETRIES, on: [...on].sort() };
}

function hashPoliciesOf(lb: LoadBalancer | undefined): readonly HashPolicy[] {
  return lb !== undefined && HASH_BASED.has(lb.policy) ? lb.hashPolicies : [];
}

function node(ctx: RouteContext, key: string): NodeJson {
  const found = ctx.chain.Nodes[key];
  if (found === undefined) throw invalid(ctx, `names node ${JSON.stringify(key)} but does not define it`);
  return found;
}

/** The legs a node leads to: a resolver is one leg with all the weight; a splitter's legs carry its weights and header changes. */
function legsOf(ctx: RouteContext, key: string, lbOf: (node: NodeJson) => LoadBalancer | undefined): { legs: RouteLeg[]; hash: readonly HashPolicy[] } {
  const next = node(ctx, key);
  if (next.Type === 'resolver') {
    const resolved = ctx.resolver(key);
    const leg: RouteLeg = {
      weight: TOTAL_SPLIT_WEIGHT,
      targets: resolved.targets,
      ...(resolved.loadBalancer !== undefined && { loadBalancer: resolved.loadBalancer }),
      requestHeaders: NO_HEADER_OPS,
      responseHeaders: NO_HEADER_OPS,
    };
    return { legs: [leg], hash: hashPoliciesOf(resolved.loadBalancer) };
  }
  if (next.Type !== 'splitter') throw invalid(ctx, `node ${key} of type ${JSON.stringify(next.Type)} cannot follow a route`);
  const weights = envoySplitWeights(next.Splits.map((s) => s.Weight));
  if (weights === undefined) throw invalid(ctx, `splitter ${next.Name}'s weights ${JSON.stringify(next.Splits.map((s) => s.Weight))} do not add up to 100 (Envoy refuses the route)`);
  const legs = next.Splits.map((split, i): RouteLeg => {
    const target = node(ctx, split.NextNode);
    if (target.Type !== 'resolver') throw invalid(ctx, `splitter ${next.Name} leads to a ${target.Type} node (${split.NextNode})`);
    const resolved = ctx.resolver(split.NextNode);
    return {
      weight: weights[i] as number,
      targets: resolved.targets,
      ...(resolved.loadBalancer !== undefined && { loadBalancer: resolved.loadBalancer }),
      requestHeaders: headerOps(ctx, `splitter ${next.Name} Splits[${i}] RequestHeaders`, split.Definition?.RequestHeaders),
      responseHeaders: headerOps(ctx, `splitter ${next.Name} Splits[${i}] ResponseHeaders`, split.Definition?.ResponseHeaders),
    };
  });
  return { legs, hash: hashPoliciesOf(lbOf(next)) };
}

/**
 * The routes of an HTTP chain: a router's routes in order, a splitter's one catch-all route, or a
 * resolver's one catch-all route with the resolver's RequestTimeout (which Envoy applies only when
 * the chain starts at the resolver).
 */
export function routesOf(ctx: RouteContext, lbOf: (node: NodeJson) => LoadBalancer | undefined): Route[] {
  const start = node(ctx, ctx.chain.StartNode);
  const catchAll: RouteMatch = { methods: [], headers: [], queryParams: [] };
  const plain = { requestHeaders: NO_HEADER_OPS, responseHeaders: NO_HEADER_OPS };
  if (start.Type === 'resolver') {
    const { legs, hash } = legsOf(ctx, ctx.chain.StartNode, lbOf);
    const timeout = durationOf(ctx, `resolver ${start.Name} RequestTimeout`, start.Resolver?.RequestTimeout);
    return [{ match: catchAll, ...(timeout !== undefined && { requestTimeoutMs: timeout }), ...plain, hashPolicies: hash, legs }];
  }
  if (start.Type === 'splitter') {
    const { legs, hash } = legsOf(ctx, ctx.chain.StartNode, lbOf);
    return [{ match: catchAll, ...plain, hashPolicies: hash, legs }];
  }
  if (start.Type !== 'router') throw invalid(ctx, `starts at a node of unknown type ${JSON.stringify(start.Type)}`);
  return start.Routes.map((r, i): Route => {
    const where = `router ${start.Name} Routes[${i}]`;
    const match = routeMatch(ctx, where, r.Definition);
    const { legs, hash } = legsOf(ctx, r.NextNode, lbOf);
    const d = r.Definition.Destination;
    if (d === undefined || d === null) return { match, ...plain, hashPolicies: hash, legs };
    if (d.PrefixRewrite !== '' && match.path?.kind !== 'exact' && match.path?.kind !== 'prefix') {
      throw invalid(ctx, `${where} has PrefixRewrite without PathExact or PathPrefix`);
    }
    const requestTimeoutMs = durationOf(ctx, `${where} RequestTimeout`, d.RequestTimeout);
    const idleTimeoutMs = durationOf(ctx, `${where} IdleTimeout`, d.IdleTimeout);
    const retry = retryPolicy(ctx, where, d);
    return {
      match,
      ...(d.PrefixRewrite !== '' && { prefixRewrite: d.PrefixRewrite }),
      ...(requestTimeoutMs !== undefined && { requestTimeoutMs }),
      ...(idleTimeoutMs !== undefined && { idleTimeoutMs }),
      ...(retry !== undefined && { retry }),
      requestHeaders: headerOps(ctx, `${where} RequestHeaders`, d.RequestHeaders),
      responseHeaders: headerOps(ctx, `${where} ResponseHeaders`, d.ResponseHeaders),
      hashPolicies: hash,
      legs,
    };
  });
}
