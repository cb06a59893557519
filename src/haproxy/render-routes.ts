/**
 * HTTP routes of an upstream frontend → haproxy.cfg rules, and the per-route parts of its
 * backends (L7.md §2.7). PURE.
 *
 * A request is routed once: the first route whose match takes it sets `txn.route`; a route of
 * several legs draws `txn.rnd` in 0..9999 and takes the first leg whose cut point (from the splits
 * map, changed at runtime) is above it; `txn.leg` (`<route>/<leg>`) then selects header changes and
 * the backend, with the leg's failover backends tried in order while the ones before have no usable
 * server. Envoy never re-matches after its own header changes, and neither do these rules: every
 * change comes after the choice. Within a level: remove, then add, then set; the split level first,
 * the route level last (it wins). Response changes use `http-after-response`, which also reaches
 * the responses HAProxy makes itself (503, 504).
 */
import type { HeaderOps, RouteMatch } from '../domain/routes.js';
import { HaproxyConnectError } from '../errors.js';
import { routeSplitKey, runDirPath } from '../domain/haproxy-names.js';
import type { Backend, Frontend, FrontendRoute, FrontendRouteLeg, HashKeyPart } from './model.js';
import { quoteArg } from './quote.js';
import { pcreLiteral, routeConditionTerms } from './route-acl.js';

/** The chosen route's index, leg (`<route>/<leg>`), random draw, leg cut point and server timeout. */
const ROUTE_VAR = 'txn.route';
const LEG_VAR = 'txn.leg';
const DRAW_VAR = 'txn.rnd';
const CUT_VAR = 'txn.cut';
const TIMEOUT_VAR = 'txn.rto';
/** Named ACL: a route was chosen. */
const ROUTE_SET_ACL = 'route_set';
/** Random draws are in 0..SPLIT_DRAWS-1: Envoy's total weight of 10000. */
const SPLIT_DRAWS = 10_000;

function invalid(message: string): never {
  throw new HaproxyConnectError('MODEL_INVALID', `Invalid HAProxy model: ${message}`);
}

const routeIs = (k: number): string => `{ var(${ROUTE_VAR}) -m int eq ${k} }`;
const legIs = (k: number, i: number): string => `{ var(${LEG_VAR}) -m str ${k}/${i} }`;
const noLeg = `!{ var(${LEG_VAR}) -m found }`;

/** A literal header value as a log-format word: `%` doubled, then quoted as one word. */
export function literalFormat(value: string): string {
  return quoteArg(value.replaceAll('%', '%%'));
}

/** Remove, then add, then set (Envoy's order within one level), each under `guard`. */
function headerOpLines(keyword: 'http-request' | 'http-after-response', ops: HeaderOps, guard: string): string[] {
  return [
    ...ops.remove.map((name) => `${keyword} del-header ${quoteArg(name)} if ${guard}`),
    ...ops.add.map(([name, value]) => `${keyword} add-header ${quoteArg(name)} ${literalFormat(value)} if ${guard}`),
    ...ops.set.map(([name, value]) => `${keyword} set-header ${quoteArg(name)} ${literalFormat(value)} if ${guard}`),
  ];
}

/** Conjunctions one route may expand to (inverted matchers multiply them): more is refused. */
const MAX_ALTERNATIVES = 64;
/** HAProxy 2.6 refuses a configuration line of more than 64 words (measured). */
const MAX_LINE_WORDS = 64;

/**
 * The first route whose match takes the request: `txn.route`, set once. Every ACL term is a named
 * ACL (`acl r<k>_<n> …`), one rule per alternative, so no line nears HAProxy's 64-word limit; a
 * route that takes no request gets no rule.
 */
function selectionLines(routes: readonly FrontendRoute[]): string[] {
  const acls = [`acl ${ROUTE_SET_ACL} var(${ROUTE_VAR}) -m found`];
  const rules: string[] = [];
  routes.forEach((route, k) => {
    const rendered = routeMatchLines(route.match, k);
    acls.push(...rendered.acls);
    rules.push(...rendered.rules);
  });
  return [...acls, ...rules];
}

/**
 * Route k's match as named ACLs and one `txn.route` rule per alternative. Throws MODEL_INVALID for
 * a match HAProxy cannot take (route-acl.ts), or one too large for its lines: the sidecar checks
 * every chain with it before it takes the chain (a refused chain keeps the last good one).
 */
export function routeMatchLines(match: RouteMatch, k: number): { acls: string[]; rules: string[] } {
  const alternatives = routeConditionTerms(match);
  if (alternatives.length > MAX_ALTERNATIVES) invalid(`route ${k} expands to ${alternatives.length} alternatives (inverted matchers), more than ${MAX_ALTERNATIVES}`);
  const names = new Map<string, string>();
  const acls: string[] = [];
  const rules = alternatives.map((conjunction) => {
    const words = conjunction.map((term) => {
      let name = names.get(term.expression);
      if (name === undefined) {
        name = `r${k}_${names.size}`;
        names.set(term.expression, name);
        acls.push(`acl ${name} ${term.expression}`);
      }
      return `${term.negated ? '!' : ''}${name}`;
    });
    const rule = `http-request set-var(${ROUTE_VAR}) int(${k}) if !${ROUTE_SET_ACL}${words.map((w) => ` ${w}`).join('')}`;
    if (rule.split(' ').length > MAX_LINE_WORDS) invalid(`route ${k} has ${words.length} matchers in one alternative, more than one HAProxy line holds`);
    return rule;
  });
  return { acls, rules };
}

/** The leg of route k: by the splits map's cut points when it has several. */
function legLines(frontend: Frontend, route: FrontendRoute, k: number, runDir: string): string[] {
  const last = route.legs.length - 1;
  if (last <= 0) return [`http-request set-var(${LEG_VAR}) str(${k}/0) if ${routeIs(k)}`];
  if (frontend.splitsMapFile === undefined) invalid(`frontend ${frontend.name} splits route ${k} without a splits map`);
  const map = runDirPath(runDir, frontend.splitsMapFile);
  const lines = [`http-request set-var(${DRAW_VAR}) rand(${SPLIT_DRAWS}) if ${routeIs(k)}`];
  for (let i = 0; i < last; i++) {
    lines.push(
      `http-request set-var(${CUT_VAR}) str(${routeSplitKey(frontend.name, k, i)}),map_str_int(${map},0) if ${routeIs(k)} ${noLeg}`,
      `http-request set-var(${LEG_VAR}) str(${k}/${i}) if ${routeIs(k)} ${noLeg} { var(${DRAW_VAR}),sub(${CUT_VAR}) -m int lt 0 }`,
    );
  }
  lines.push(`http-request set-var(${LEG_VAR}) str(${k}/${last}) if ${routeIs(k)} ${noLeg}`);
  return lines;
}

/** PrefixRewrite as Envoy does it: the matched prefix replaced, the query kept, the original in x-envoy-original-path. */
function rewriteLines(route: FrontendRoute, k: number): string[] {
  const rewrite = route.prefixRewrite;
  if (rewrite === undefined) return [];
  if (rewrite.replacement.includes('\\')) invalid(`route ${k} rewrites the path to ${JSON.stringify(rewrite.replacement)}, which holds a backslash`);
  return [
    `http-request set-header x-envoy-original-path %[pathq] if ${routeIs(k)}`,
    `http-request replace-pathq ${quoteArg(`^${pcreLiteral(rewrite.prefix)}(.*)$`)} ${quoteArg(`${rewrite.replacement.replaceAll('%', '%%')}\\1`)} if ${routeIs(k)}`,
  ];
}

/** The leg's backend: its failover tiers in order while they have a usable server, else its primary. */
function backendLines(route: FrontendRoute, k: number): string[] {
  return route.legs.flatMap((leg, i) => {
    const [primary, ...failover] = leg.backends;
    if (primary === undefined) return [];
    if (failover.length === 0) return [`use_backend ${primary} if ${legIs(k, i)}`];
    return [...leg.backends.map((b) => `use_backend ${b} if ${legIs(k, i)} { nbsrv(${b}) gt 0 }`), `use_backend ${primary} if ${legIs(k, i)}`];
  });
}

/**
 * The frontend rules of its routes (empty when it has none). `hashKeyLines(parts, guard)` renders
 * a route's consistent-hash key under a guard (render.ts owns the key's form).
 */
export function routeFrontendLines(frontend: Frontend, runDir: string, hashKeyLines: (parts: readonly HashKeyPart[], guard: string) => string[]): string[] {
  const routes = frontend.routes ?? [];
  if (routes.length === 0) return [];
  const perRoute = (f: (route: FrontendRoute, k: number) => string[]): string[] => routes.flatMap((route, k) => f(route, k));
  const perLeg = (f: (leg: FrontendRouteLeg, k: number, i: number) => string[]): string[] => routes.flatMap((route, k) => route.legs.flatMap((leg, i) => f(leg, k, i)));
  return [
    ...selectionLines(routes),
    ...perRoute((route, k) => [
      `http-request set-var(${TIMEOUT_VAR}) int(${route.timeoutServerMs}) if ${routeIs(k)}`,
      ...legLines(frontend, route, k, runDir),
      ...hashKeyLines(route.hashKey, routeIs(k)),
    ]),
    ...perLeg((leg, k, i) => headerOpLines('http-request', leg.requestHeaders, legIs(k, i))),
    ...perRoute((route, k) => headerOpLines('http-request', route.requestHeaders, routeIs(k))),
    ...perRoute(rewriteLines),
    ...perLeg((leg, k, i) => headerOpLines('http-after-response', leg.responseHeaders, legIs(k, i))),
    ...perRoute((route, k) => headerOpLines('http-after-response', route.responseHeaders, routeIs(k))),
    ...perRoute(backendLines),
  ];
}

/** A backend's retries and its per-route server timeout. */
export function routeBackendLines(backend: Backend): string[] {
  const lines: string[] = [];
  if (backend.retries !== undefined) {
    lines.push(`retries ${backend.retries.count}`);
    if (backend.retries.count > 0) lines.push(`retry-on ${backend.retries.on.length === 0 ? 'none' : backend.retries.on.join(' ')}`);
  }
  if (backend.routeTimeout === true) lines.push(`http-request set-timeout server var(${TIMEOUT_VAR}) if { var(${TIMEOUT_VAR}) -m found }`);
  return lines;
}
