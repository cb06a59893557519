/**
 * An oracle for the HTTP routing decision Envoy takes on a Consul 1.16.2 upstream listener: given
 * the compiled discovery chain (GET /v1/discovery-chain/<service>, Consul being the oracle for
 * compilation: catch-all appended, methods upper-cased, destinations resolved to resolver nodes and
 * targets) and a raw HTTP/1.1 request, which route takes it, which target answers, the path the
 * upstream sees and the request headers after the route's header operations.
 *
 * It is a second implementation, independent of src/: it follows Consul's translation of a chain
 * into Envoy routes (agent/xds/routes.go: makeRouteMatchForDiscoveryRoute,
 * makeUpstreamRouteForDiscoveryChain, injectHeaderManipToRoute) and Envoy's behaviour for the
 * versions Consul 1.16 supports (1.23-1.26; /work/shared/L7.md §2.1-2.2), read in Envoy's code
 * where its API reference says otherwise or nothing:
 *
 * - routes are tried in order, the first whose match takes the request wins; a route without a
 *   match (or an empty one) matches every request (prefix `/`);
 * - path specifier, first of PathExact, PathPrefix, PathRegex: `path` is an exact comparison,
 *   `prefix` a starts-with, `safe_regex` an RE2 full match, each of the path WITHOUT its query and
 *   fragment; all raw (no %-decoding, no normalisation: Consul sets neither normalize_path nor
 *   merge_slashes) and case-sensitive. For `prefix` this is Envoy's code, not the sentence of its
 *   API reference ("the prefix must match the beginning of the :path header"): since 1.13.1 (the
 *   CVE-2020-8595 fix, envoyproxy/envoy#10010) PrefixRouteEntryImpl matches through
 *   Matchers::PathMatcher::createPrefix, whose match() runs PathUtil::removeQueryAndFragment first
 *   (source/common/router/config_impl.cc, source/common/common/matchers.cc, the same in 1.23-1.26;
 *   the documentation gap is envoyproxy/envoy#15592). It only matters for a PathPrefix holding a
 *   '?' (or '#'): Envoy never matches it. `prefixIncludesQuery` selects the documented reading;
 * - header matchers, the first of Exact, Regex, Prefix, Suffix, Present that is set (routes.go's
 *   order): the values of a repeated header joined with ',' (Envoy's getAllOfHeaderAsString),
 *   names case-insensitive; an absent header matches only `Present` + `Invert`; otherwise the result
 *   is XOR-ed with `Invert`;
 * - Methods: one `:method` matcher, the RE2 full match of Consul's `strings.Join(Methods, "|")`;
 * - query parameters: parsed as Envoy's Http::Utility::parseQueryString (everything after the
 *   first '?', split on '&' only, a name without '=' has the value "", raw, the first occurrence
 *   of a name wins; an empty piece names the empty parameter, which no matcher names); Exact,
 *   Regex (RE2 full match), Present;
 * - header operations of the route (Consul: Add as append, Set as overwrite, Remove): remove
 *   first, then the appends and overwrites, each header on its own; values are Envoy header
 *   formatters: `%%` is a literal `%`, any other `%` is an operator this oracle refuses; an empty
 *   value is dropped (HeaderValueOption.keep_empty_value defaults to false);
 * - PrefixRewrite (only with a PathExact or PathPrefix match, Consul validates that): the first
 *   len(prefix) characters of the raw `:path` replaced (the query kept after them), and
 *   `x-envoy-original-path` set to the original `:path` (Consul does not suppress Envoy's
 *   headers), after the header operations (RouteEntryImplBase::finalizeRequestHeaders).
 *
 * Deliberately not modelled (the oracle throws rather than guess): a splitter after a route or at
 * the start (weights are random; there are other tests for them), Envoy formatter operators in
 * header values, two Add or two Set keys that differ only in case (Consul emits a Go map: Envoy
 * would get them in random order), and an Add and a Set of the same header in one route: Consul
 * emits the appends before the overwrites; Envoy before envoyproxy/envoy#23391 ("router: evaluate
 * all headers before modifying", in review in November 2022) applies them in that order (the Set
 * wins), Envoy with it overwrites first and appends after (header_parser.cc: "First overwrite all
 * headers which need to be overwritten. Now add headers which should be added."), so the upstream
 * gets both values. Which of 1.23-1.26 carry #23391 was not pinned. Not modelled either: retries,
 * timeouts, hash policies, response headers, failover, and the proxy refusing a request before
 * routing (e.g. a lower-case method, which Envoy's HTTP/1 codec rejects with 400).
 */
import { RE2JS } from 're2js';

export interface ChainHeaderMatch {
  Name: string;
  Present?: boolean;
  Exact?: string;
  Prefix?: string;
  Suffix?: string;
  Regex?: string;
  Invert?: boolean;
}

export interface ChainQueryMatch {
  Name: string;
  Present?: boolean;
  Exact?: string;
  Regex?: string;
}

export interface ChainHttpMatch {
  PathExact?: string;
  PathPrefix?: string;
  PathRegex?: string;
  Header?: ChainHeaderMatch[];
  QueryParam?: ChainQueryMatch[];
  Methods?: string[];
}

export interface HeaderModifiers {
  Add?: Record<string, string>;
  Set?: Record<string, string>;
  Remove?: string[];
}

export interface ChainRouteDestination {
  Service?: string;
  ServiceSubset?: string;
  PrefixRewrite?: string;
  RequestHeaders?: HeaderModifiers;
  [other: string]: unknown;
}

export interface ChainRoute {
  Definition: { Match?: { HTTP?: ChainHttpMatch }; Destination?: ChainRouteDestination };
  NextNode: string;
}

export interface ChainNode {
  Type: 'router' | 'splitter' | 'resolver';
  Name: string;
  Routes?: ChainRoute[];
  Resolver?: { Target: string };
}

export interface ChainTarget {
  ID: string;
  Service: string;
  ServiceSubset?: string;
  [other: string]: unknown;
}

export interface CompiledChain {
  ServiceName: string;
  Protocol: string;
  StartNode: string;
  Nodes: Record<string, ChainNode>;
  Targets: Record<string, ChainTarget>;
}

/** A request as it leaves the client: method and request target exactly as sent, header lines in order. */
export interface RawRequest {
  method: string;
  /** The raw request target (origin form): path, then `?query` if any. */
  path: string;
  headers: ReadonlyArray<readonly [string, string]>;
}

export interface EnvoyRouteOptions {
  /**
   * Match PathPrefix against `:path` with its query, as Envoy's API reference reads. Default false:
   * what Envoy 1.23-1.26 does (the prefix is matched on the path without its query; see the top of
   * this file).
   */
  prefixIncludesQuery?: boolean;
}

/** What Envoy does with a request. */
export interface EnvoyDecision {
  /** Index in the router's Routes (the compiled list, catch-all last); 0 when the chain starts at a resolver; -1: no route (Envoy answers 404). */
  routeIndex: number;
  /** The node the route leads to (`resolver:…`), '' when no route matched. */
  nextNode: string;
  /** The resolver node's Target, '' when no route matched. */
  targetId: string;
  /** The request target the upstream receives. */
  path: string;
  /** The request headers the upstream receives (names lower-cased), in order. */
  headers: Array<[string, string]>;
}

// ---------------------------------------------------------------------------------------------
// Envoy's RouteMatch, as Consul builds it (routes.go makeRouteMatchForDiscoveryRoute).

export type PathSpecifier = { kind: 'prefix'; value: string } | { kind: 'path'; value: string } | { kind: 'safe_regex'; value: string };

export type StringMatch = { kind: 'exact'; value: string } | { kind: 'prefix'; value: string } | { kind: 'suffix'; value: string } | { kind: 'safe_regex'; value: string } | { kind: 'present' };

export interface EnvoyHeaderMatcher {
  /** Lower-cased (Envoy's LowerCaseString); `:method` for Methods. */
  name: string;
  match: StringMatch;
  invert: boolean;
}

export interface EnvoyQueryMatcher {
  name: string;
  match: { kind: 'exact'; value: string } | { kind: 'safe_regex'; value: string } | { kind: 'present' };
}

export interface EnvoyRouteMatch {
  path: PathSpecifier;
  headers: EnvoyHeaderMatcher[];
  query: EnvoyQueryMatcher[];
}

const DEFAULT_MATCH: EnvoyRouteMatch = { path: { kind: 'prefix', value: '/' }, headers: [], query: [] };

function isEmptyMatch(http: ChainHttpMatch | undefined): boolean {
  return (
    http === undefined ||
    ((http.PathExact ?? '') === '' &&
      (http.PathPrefix ?? '') === '' &&
      (http.PathRegex ?? '') === '' &&
      (http.Header ?? []).length === 0 &&
      (http.QueryParam ?? []).length === 0 &&
      (http.Methods ?? []).length === 0)
  );
}

/** The Envoy RouteMatch Consul generates for one compiled route. */
export function envoyRouteMatch(route: ChainRoute): EnvoyRouteMatch {
  const http = route.Definition.Match?.HTTP;
  if (http === undefined || isEmptyMatch(http)) return DEFAULT_MATCH;
  let path: PathSpecifier;
  if ((http.PathExact ?? '') !== '') path = { kind: 'path', value: http.PathExact as string };
  else if ((http.PathPrefix ?? '') !== '') path = { kind: 'prefix', value: http.PathPrefix as string };
  else if ((http.PathRegex ?? '') !== '') path = { kind: 'safe_regex', value: http.PathRegex as string };
  else path = { kind: 'prefix', value: '/' };

  const headers: EnvoyHeaderMatcher[] = [];
  for (const h of http.Header ?? []) {
    let match: StringMatch;
    // routes.go's switch order: Exact, Regex, Prefix, Suffix, Present; none set: skipped.
    if ((h.Exact ?? '') !== '') match = { kind: 'exact', value: h.Exact as string };
    else if ((h.Regex ?? '') !== '') match = { kind: 'safe_regex', value: h.Regex as string };
    else if ((h.Prefix ?? '') !== '') match = { kind: 'prefix', value: h.Prefix as string };
    else if ((h.Suffix ?? '') !== '') match = { kind: 'suffix', value: h.Suffix as string };
    else if (h.Present === true) match = { kind: 'present' };
    else continue;
    headers.push({ name: h.Name.toLowerCase(), match, invert: h.Invert === true });
  }
  if ((http.Methods ?? []).length > 0) {
    headers.push({ name: ':method', match: { kind: 'safe_regex', value: (http.Methods as string[]).join('|') }, invert: false });
  }

  const query: EnvoyQueryMatcher[] = [];
  for (const q of http.QueryParam ?? []) {
    if ((q.Exact ?? '') !== '') query.push({ name: q.Name, match: { kind: 'exact', value: q.Exact as string } });
    else if ((q.Regex ?? '') !== '') query.push({ name: q.Name, match: { kind: 'safe_regex', value: q.Regex as string } });
    else if (q.Present === true) query.push({ name: q.Name, match: { kind: 'present' } });
  }
  return { path, headers, query };
}

// ---------------------------------------------------------------------------------------------
// Matching.

const compiled = new Map<string, RE2JS>();

/** RE2 full match (Envoy's safe_regex with the google_re2 engine: RE2::FullMatch). */
export function re2FullMatch(pattern: string, input: string): boolean {
  let re = compiled.get(pattern);
  if (re === undefined) {
    re = RE2JS.compile(pattern);
    compiled.set(pattern, re);
  }
  return re.matches(input);
}

/** `:path` without its query and fragment (Envoy's PathUtil::removeQueryAndFragment). */
export function pathWithoutQuery(path: string): string {
  const at = path.search(/[?#]/);
  return at < 0 ? path : path.slice(0, at);
}

/**
 * The value Envoy matches a header matcher against: the values of every line of that header
 * (names case-insensitive, values trimmed as the HTTP/1 codec does) joined with ','; undefined when
 * absent. `:method` is the request's method.
 */
export function joinedHeader(req: RawRequest, name: string): string | undefined {
  if (name === ':method') return req.method;
  const lower = name.toLowerCase();
  const values = req.headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v.trim());
  return values.length === 0 ? undefined : values.join(',');
}

/** Envoy's Http::Utility::parseQueryString: raw, '&' only, empty pieces skipped, the first occurrence of a name wins. */
export function parseQueryString(path: string): Map<string, string> {
  const params = new Map<string, string>();
  const start = path.indexOf('?');
  if (start < 0) return params;
  for (const piece of path.slice(start + 1).split('&')) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const [name, value] = eq < 0 ? [piece, ''] : [piece.slice(0, eq), piece.slice(eq + 1)];
    if (!params.has(name)) params.set(name, value);
  }
  return params;
}

function stringMatches(match: StringMatch, value: string): boolean {
  switch (match.kind) {
    case 'exact':
      return value === match.value;
    case 'prefix':
      return value.startsWith(match.value);
    case 'suffix':
      return value.endsWith(match.value);
    case 'safe_regex':
      return re2FullMatch(match.value, value);
    case 'present':
      return true;
  }
}

/** Envoy's HeaderUtility::matchHeaders (1.23-1.26, treat_missing_header_as_empty false). */
export function headerMatches(m: EnvoyHeaderMatcher, req: RawRequest): boolean {
  const value = joinedHeader(req, m.name);
  if (value === undefined) return m.invert && m.match.kind === 'present';
  return stringMatches(m.match, value) !== m.invert;
}

export function queryMatches(m: EnvoyQueryMatcher, params: Map<string, string>): boolean {
  const value = params.get(m.name);
  if (value === undefined) return false;
  return stringMatches(m.match, value);
}

export function pathMatches(p: PathSpecifier, path: string, options: EnvoyRouteOptions = {}): boolean {
  switch (p.kind) {
    case 'prefix':
      return (options.prefixIncludesQuery === true ? path : pathWithoutQuery(path)).startsWith(p.value);
    case 'path':
      return pathWithoutQuery(path) === p.value;
    case 'safe_regex':
      return re2FullMatch(p.value, pathWithoutQuery(path));
  }
}

export function routeMatches(match: EnvoyRouteMatch, req: RawRequest, options: EnvoyRouteOptions = {}): boolean {
  if (!pathMatches(match.path, req.path, options)) return false;
  if (!match.headers.every((h) => headerMatches(h, req))) return false;
  if (match.query.length > 0) {
    const params = parseQueryString(req.path);
    if (!match.query.every((q) => queryMatches(q, params))) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Header operations and rewrites.

/** An Envoy header formatter that is a literal: `%%` is `%`; any other `%` starts an operator, which this oracle does not model. */
export function envoyLiteral(format: string): string {
  let out = '';
  for (let i = 0; i < format.length; i++) {
    const ch = format[i] as string;
    if (ch !== '%') {
      out += ch;
      continue;
    }
    if (format[i + 1] !== '%') throw new Error(`header value ${JSON.stringify(format)} holds an Envoy operator; the oracle models literals only`);
    out += '%';
    i++;
  }
  return out;
}

function singleCaseKeys(map: Record<string, string> | undefined, what: string): Array<[string, string]> {
  const entries = Object.entries(map ?? {});
  const names = entries.map(([k]) => k.toLowerCase());
  if (new Set(names).size !== names.length) throw new Error(`${what} has keys that differ only in case (${JSON.stringify(map)}): Envoy would apply them in Go map order`);
  return entries;
}

/**
 * Envoy's HeaderParser::evaluateHeaders for Consul's request_headers_to_add (Add: append, Set:
 * overwrite) and request_headers_to_remove: remove, then the rest. A header both added and set is
 * refused (Envoy-version-dependent, see the top of this file).
 */
export function applyHeaderModifiers(headers: ReadonlyArray<readonly [string, string]>, ops: HeaderModifiers | undefined): Array<[string, string]> {
  // As the HTTP/1 codec stores them: names lower-cased, values trimmed.
  let out: Array<[string, string]> = headers.map(([n, v]) => [n.toLowerCase(), v.trim()]);
  if (ops === undefined) return out;
  const both = Object.keys(ops.Add ?? {}).filter((a) => Object.keys(ops.Set ?? {}).some((b) => a.toLowerCase() === b.toLowerCase()));
  if (both.length > 0) throw new Error(`RequestHeaders adds and sets ${JSON.stringify(both)}: the order differs between the Envoy versions Consul 1.16 supports; not modelled`);
  const removed = new Set((ops.Remove ?? []).map((n) => n.toLowerCase()));
  out = out.filter(([n]) => !removed.has(n));
  for (const [key, format] of singleCaseKeys(ops.Add, 'RequestHeaders.Add')) {
    const value = envoyLiteral(format);
    if (value !== '') out.push([key.toLowerCase(), value]);
  }
  for (const [key, format] of singleCaseKeys(ops.Set, 'RequestHeaders.Set')) {
    const value = envoyLiteral(format);
    if (value === '') continue;
    const name = key.toLowerCase();
    out = out.filter(([n]) => n !== name);
    out.push([name, value]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The decision.

function resolverTarget(chain: CompiledChain, key: string): string {
  const node = chain.Nodes[key];
  if (node === undefined) throw new Error(`the chain has no node ${key}`);
  if (node.Type !== 'resolver' || node.Resolver === undefined) throw new Error(`node ${key} is a ${node.Type}: the oracle models routes to resolvers only`);
  return node.Resolver.Target;
}

/** What Envoy, configured by Consul 1.16.2 from `chain`, does with `req` on the upstream listener. */
export function envoyRoute(chain: CompiledChain, req: RawRequest, options: EnvoyRouteOptions = {}): EnvoyDecision {
  const start = chain.Nodes[chain.StartNode];
  if (start === undefined) throw new Error(`the chain has no start node ${chain.StartNode}`);
  const untouched = (): Array<[string, string]> => applyHeaderModifiers(req.headers, undefined);
  if (start.Type === 'resolver') {
    return { routeIndex: 0, nextNode: chain.StartNode, targetId: resolverTarget(chain, chain.StartNode), path: req.path, headers: untouched() };
  }
  if (start.Type !== 'router') throw new Error(`the chain starts at a ${start.Type}: the oracle models routers and resolvers only`);
  const routes = start.Routes ?? [];
  for (let i = 0; i < routes.length; i++) {
    const route = routes[i] as ChainRoute;
    const match = envoyRouteMatch(route);
    if (!routeMatches(match, req, options)) continue;
    const destination = route.Definition.Destination;
    let headers = applyHeaderModifiers(req.headers, destination?.RequestHeaders);
    let path = req.path;
    const rewrite = destination?.PrefixRewrite ?? '';
    if (rewrite !== '') {
      if (match.path.kind === 'safe_regex') throw new Error(`route ${i}: PrefixRewrite with a PathRegex (Consul refuses it)`);
      // finalizePathHeader: rewrite + path[len(matched):], the query included; x-envoy-original-path set.
      path = rewrite + req.path.slice(match.path.value.length);
      headers = headers.filter(([n]) => n !== 'x-envoy-original-path');
      headers.push(['x-envoy-original-path', req.path]);
    }
    return { routeIndex: i, nextNode: route.NextNode, targetId: resolverTarget(chain, route.NextNode), path, headers };
  }
  return { routeIndex: -1, nextNode: '', targetId: '', path: req.path, headers: untouched() };
}

/** The values of header `name` in a header list (names compared in lower case), in order. */
export function headerValues(headers: ReadonlyArray<readonly [string, string]>, name: string): string[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}
