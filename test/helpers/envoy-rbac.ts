/**
 * An evaluator of Envoy's HTTP RBAC filter (envoy.extensions.filters.http.rbac.v3.RBAC, as protojson
 * with proto field names), for the versions Consul 1.16 supports (Envoy 1.23-1.26). It is the
 * second half of the L7 intentions oracle: Consul's own xDS generator writes the filter
 * (tools/consul/rbacoracle), this file decides a request with it as Envoy would
 * (source/extensions/filters/common/rbac/{engine_impl,matchers}.cc, source/common/http/header_utility.cc,
 * source/common/common/matchers.cc). Independent of src/.
 *
 * - No `rules`: the filter enforces nothing. Action ALLOW: allowed iff some policy matches; DENY:
 *   denied iff some policy matches; LOG: allowed. A policy matches iff one of its permissions and one
 *   of its principals match (an empty list matches nothing).
 * - Principals: and_ids, or_ids, not_id, any, authenticated.principal_name (a StringMatcher on the
 *   client certificate's URI SAN; a Consul leaf has no DNS SAN and an empty subject).
 * - Permissions: and_rules, or_rules, not_rule, any, url_path (the `:path` without its query and
 *   fragment: PathUtil::removeQueryAndFragment, raw, no decoding), header.
 * - StringMatcher: exact, prefix, suffix, contains, safe_regex (RE2 full match), ignore_case (ASCII).
 * - HeaderMatcher (HeaderUtility::matchHeaders): the name is case-insensitive; the value is every
 *   occurrence joined with ',' (getAllOfHeaderAsString); a missing header matches only an inverted
 *   present_match (or, with treat_missing_header_as_empty, is read as ''); otherwise the result is
 *   XOR-ed with invert_match. exact_match '' matches any value. `:method` and `:path` are the
 *   request's method and raw target.
 *
 * Not modelled (the evaluator throws rather than guess): other principal and permission kinds
 * (metadata, IPs, ports, requested server name, XFCC `header` principals), range/contains header
 * matchers, present_match false, pseudo-headers other than :method and :path. The request is the one
 * the RBAC filter sees: the connection manager's own header changes (x-forwarded-*, x-request-id,
 * x-forwarded-client-cert, x-envoy-*) and its coalescing of a repeated `cookie` with '; ' are not
 * applied here, so header matchers on those names are outside this model.
 */
import { re2FullMatch } from './envoy-routes.js';

type Json = Record<string, unknown>;

/** protojson of envoy.extensions.filters.http.rbac.v3.RBAC (only the fields read). */
export interface HttpRbacConfig {
  rules?: { action?: 'ALLOW' | 'DENY' | 'LOG'; policies?: Record<string, { permissions?: Json[]; principals?: Json[] }> };
  [other: string]: unknown;
}

/** A request as Envoy's RBAC filter sees it. */
export interface RbacRequest {
  /** The client certificate's URI SAN (SPIFFE ID). */
  principal: string;
  method: string;
  /** The raw request target (`:path`), query included. */
  path: string;
  /** Header lines in order (names in any case). */
  headers: ReadonlyArray<readonly [string, string]>;
}

/** Called for every leaf matcher Envoy evaluates, e.g. ('header.exact', true) or ('url_path.prefix', false). */
export type RbacTrace = (kind: string, inverted: boolean, result: boolean) => void;

export interface RbacDecision {
  allowed: boolean;
  /** The policies that matched (sorted). */
  matched: string[];
}

/** Http::Utility::PathUtil::removeQueryAndFragment. */
export function envoyUrlPath(rawPath: string): string {
  const cut = rawPath.search(/[?#]/);
  return cut < 0 ? rawPath : rawPath.slice(0, cut);
}

function only(obj: Json, what: string): [string, unknown] {
  const keys = Object.keys(obj);
  if (keys.length !== 1) throw new Error(`${what}: expected exactly one field, got ${JSON.stringify(obj)}`);
  const key = keys[0] as string;
  return [key, obj[key]];
}

/** envoy.type.matcher.v3.StringMatcher. */
function stringMatches(m: Json, value: string, what: string, trace: RbacTrace | undefined): boolean {
  const ignoreCase = m['ignore_case'] === true;
  const { ignore_case: _, ...rest } = m;
  const [kind, arg] = only(rest, `${what} StringMatcher`);
  const fold = (s: string): string => (ignoreCase ? s.replace(/[A-Z]/g, (c) => c.toLowerCase()) : s);
  let result: boolean;
  switch (kind) {
    case 'exact':
      result = fold(value) === fold(arg as string);
      break;
    case 'prefix':
      result = fold(value).startsWith(fold(arg as string));
      break;
    case 'suffix':
      result = fold(value).endsWith(fold(arg as string));
      break;
    case 'contains':
      result = fold(value).includes(fold(arg as string));
      break;
    case 'safe_regex':
      if (ignoreCase) throw new Error(`${what}: ignore_case with safe_regex is refused by Envoy`);
      result = re2FullMatch((arg as Json)['regex'] as string, value);
      break;
    default:
      throw new Error(`${what}: StringMatcher ${kind} is not modelled`);
  }
  trace?.(`${what}.${kind}`, false, result);
  return result;
}

function headerValue(request: RbacRequest, name: string): string | undefined {
  if (name === ':method') return request.method;
  if (name === ':path') return request.path;
  if (name.startsWith(':')) throw new Error(`header matcher on ${name} is not modelled`);
  const values = request.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
  return values.length === 0 ? undefined : values.join(',');
}

/** envoy.config.route.v3.HeaderMatcher, HeaderUtility::matchHeaders of Envoy 1.23-1.26. */
function headerMatches(h: Json, request: RbacRequest, trace: RbacTrace | undefined): boolean {
  const { name, invert_match, treat_missing_header_as_empty, ...spec } = h;
  const invert = invert_match === true;
  const [kind, arg] = only(spec, 'HeaderMatcher');
  const headerName = (name as string).toLowerCase();
  let value = headerValue(request, headerName);
  const label = headerName === ':method' ? 'method' : 'header';
  if (value === undefined) {
    if (treat_missing_header_as_empty === true) value = '';
    else {
      const result = invert && kind === 'present_match';
      trace?.(`${label}.${kind}.absent`, invert, result);
      return result;
    }
  }
  let matched: boolean;
  switch (kind) {
    case 'exact_match':
      matched = arg === '' || value === arg;
      break;
    case 'prefix_match':
      matched = value.startsWith(arg as string);
      break;
    case 'suffix_match':
      matched = value.endsWith(arg as string);
      break;
    case 'safe_regex_match':
      matched = re2FullMatch((arg as Json)['regex'] as string, value);
      break;
    case 'present_match':
      if (arg !== true) throw new Error('present_match false is not modelled');
      matched = true;
      break;
    case 'string_match':
      matched = stringMatches(arg as Json, value, `${label}.string_match`, undefined);
      break;
    default:
      throw new Error(`HeaderMatcher ${kind} is not modelled`);
  }
  const result = matched !== invert;
  trace?.(`${label}.${kind}`, invert, result);
  return result;
}

/** envoy.config.rbac.v3.Permission. */
export function permissionMatches(p: Json, request: RbacRequest, trace?: RbacTrace): boolean {
  const [kind, arg] = only(p, 'Permission');
  switch (kind) {
    case 'any':
      return arg === true;
    case 'and_rules':
      return ((arg as { rules: Json[] }).rules ?? []).every((r) => permissionMatches(r, request, trace));
    case 'or_rules':
      return ((arg as { rules: Json[] }).rules ?? []).some((r) => permissionMatches(r, request, trace));
    case 'not_rule':
      return !permissionMatches(arg as Json, request, trace);
    case 'url_path':
      return stringMatches(only(arg as Json, 'PathMatcher')[1] as Json, envoyUrlPath(request.path), 'url_path', trace);
    case 'header':
      return headerMatches(arg as Json, request, trace);
    default:
      throw new Error(`Permission ${kind} is not modelled`);
  }
}

/** envoy.config.rbac.v3.Principal. */
export function principalMatches(p: Json, request: RbacRequest, trace?: RbacTrace): boolean {
  const [kind, arg] = only(p, 'Principal');
  switch (kind) {
    case 'any':
      return arg === true;
    case 'and_ids':
      return ((arg as { ids: Json[] }).ids ?? []).every((x) => principalMatches(x, request, trace));
    case 'or_ids':
      return ((arg as { ids: Json[] }).ids ?? []).some((x) => principalMatches(x, request, trace));
    case 'not_id':
      return !principalMatches(arg as Json, request, trace);
    case 'authenticated': {
      const matcher = (arg as Json)['principal_name'] as Json | undefined;
      // No matcher: any authenticated peer (every mesh client is).
      return matcher === undefined || stringMatches(matcher, request.principal, 'principal', trace);
    }
    default:
      throw new Error(`Principal ${kind} is not modelled`);
  }
}

/** Envoy's decision on `request` under the HTTP RBAC filter `config`. */
export function envoyRbacDecision(config: HttpRbacConfig, request: RbacRequest, trace?: RbacTrace): RbacDecision {
  const rules = config.rules;
  if (rules === undefined) return { allowed: true, matched: [] };
  const matched = Object.entries(rules.policies ?? {})
    .filter(([, policy]) => (policy.permissions ?? []).some((p) => permissionMatches(p, request, trace)) && (policy.principals ?? []).some((p) => principalMatches(p, request, trace)))
    .map(([name]) => name)
    .sort();
  const action = rules.action ?? 'ALLOW';
  if (action === 'LOG') return { allowed: true, matched };
  return { allowed: action === 'ALLOW' ? matched.length > 0 : matched.length === 0, matched };
}
