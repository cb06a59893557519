/**
 * Differential test of the HTTP routing decision: web's sidecar (real Consul 1.16.2 dev agent, real
 * sidecars, real HAProxy) against an oracle that follows Envoy as Consul configures it
 * (test/helpers/envoy-routes.ts, independent of src/).
 *
 * Set-up as test/integration/http-routing.test.ts: web → api, api-v1 / api-v2 (Meta version, the
 * resolver's subsets v1 / v2) and api-admin, each a reporting app behind its own sidecar, every
 * service HTTP through service-defaults. fast-check (seeded: ROUTING_DIFF_SEED, default below)
 * generates ROUTERS service-routers of 2-6 routes whose matchers are drawn from pools aimed at the
 * edges (raw paths with `%2F`, trailing and double slashes, '?' inside a PathPrefix, repeated
 * and value-less query parameters, repeated headers, a name in another case, Invert on absent
 * headers, method lists written in lower case, regexes valid in RE2 and PCRE2 alike), with
 * destinations api/v1, api/v2, api (either instance) and api-admin, PrefixRewrite on PathExact /
 * PathPrefix routes (prefixes and rewrites holding regex metacharacters), and RequestHeaders
 * Add/Set/Remove on x-r (sometimes on x-a / x-b too; values with `%%`, quotes, `#`, `${…}` and
 * empty values, which Envoy drops). Most routes also Set `x-route-id` to their index, so the route
 * that took a request is seen, not only its target.
 *
 * For each router: write it (a probe route first, which Sets x-probe to the router's generation,
 * so no earlier router can fake the switch), wait until web serves it, fetch Consul's compiled
 * chain, send REQUESTS generated requests (about half built from the router's own values so its
 * routes really match), and compare what the app saw (which instance, method, path, x-a, x-b, x-r,
 * x-route-id, x-envoy-original-path) with the oracle's decision on the compiled chain. Every
 * mismatch is collected; the test fails with a table, the seed, and for each router with a
 * mismatch its routes and the haproxy.cfg frontend web served for it.
 *
 * PathPrefix follows Envoy's code, which matches the prefix on the path without its query (see
 * envoy-routes.ts), as the sidecar does; ROUTING_DIFF_PREFIX_WITH_QUERY=1 compares against the
 * reading of Envoy's API reference instead (the prefix on the path with its query), to see the
 * requests where the two readings part.
 *
 * Excluded on purpose: header patterns holding ',' and header regexes that can match ',' (a
 * documented approximation: HAProxy cannot join a repeated header's values, README "HTTP
 * routing"), lower-case methods (Envoy's codec refuses them before routing), splitters (random),
 * Envoy formatter operators in header values, an Add and a Set of the same header in one route
 * (Envoy versions disagree), `#` fragments.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { type HttpReport, type ReportingHttpApp, startReportingHttpApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService, registerMeshServiceWithMeta } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { msSince, note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { type ChainNode, type CompiledChain, type EnvoyDecision, envoyRoute, headerValues, type RawRequest, re2FullMatch } from '../helpers/envoy-routes.js';

const SEED = Number(process.env.ROUTING_DIFF_SEED ?? 20_261_203);
/** PathPrefix on the path with its query (Envoy's API reference) instead of without it (Envoy's code). */
const PREFIX_WITH_QUERY = process.env.ROUTING_DIFF_PREFIX_WITH_QUERY === '1';
/** Routers written, and requests sent per router. */
const ROUTERS = 12;
const REQUESTS = 80;
const APPLY_TIMEOUT_MS = 30_000;
/** The request headers compared (besides the instance, the method and the path). */
const COMPARED_HEADERS = ['x-a', 'x-b', 'x-r', 'x-route-id', 'x-envoy-original-path'];

type Json = Record<string, unknown>;

interface Instance {
  id: string;
  name: string;
  key: string;
  meta: Record<string, string>;
}
const INSTANCES: readonly Instance[] = [
  { id: 'api-v1', name: 'api', key: 'apiV1', meta: { version: 'v1' } },
  { id: 'api-v2', name: 'api', key: 'apiV2', meta: { version: 'v2' } },
  { id: 'api-admin', name: 'api-admin', key: 'admin', meta: {} },
];
const VERSION_SUBSETS = { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2' } };

// ---------------------------------------------------------------------------------------------
// Pools and generators.

/** `${X}` and `${HOME}`: HAProxy expands environment variables in double-quoted configuration words. */
const ENV_X = '\u0024{X}';
const ENV_HOME = '\u0024{HOME}';
/** Request paths (raw request targets without a query). */
const REQUEST_PATHS = ['/', '/a', '/ab', '/a/', '/a/b', '/a//', '/a%2Fb', '/a%2fb', '/A', '/b', '/abc', '/a/b/', '/ba', '/a+', '/a+b', '/aab', '/a.b', '/axb', '/a(b', '/a$', "/a'", '/a*b'];
/** More paths, offered when a route's regex matches them. */
const REGEX_CANDIDATES = [...REQUEST_PATHS, '/aa', '/abab', '/a%2F', '/b/', '/aab', '/ab/', '/a/a', '/bb', '/a%2f', '/ba/b', '/abb', '/Ab', '/a%2Fa'];
const EXACT_PATHS = ['/a', '/ab', '/a/', '/a/b', '/a%2Fb', '/A', '/', '/a?x=1', '/a+', "/a'"];
/** Regex metacharacters too: a PrefixRewrite must replace them literally. */
const PREFIX_PATHS = ['/a', '/ab', '/a/', '/a%2F', '/a?x=1', '/a?', '/', '/b', '/a//', '/A', '/a+', '/a.', '/a(', '/a$', '/a*', "/a'"];
const QUERY_STRINGS = ['', '', '?x=1', '?x', '?x=', '?x=1&x=2', '?x=2&x=1', '?y=2&x=1', '?&x=1', '?x=1;y=2', '?x=12', '?x=%31', '?y', '?x=1?y', '?X=1', '?x.y=1', '?xzy=1', '?x=1x2'];
/** Header values a client sends (a value may hold ','; the joined value of a repeated header always does). */
const REQUEST_VALUES = ['', 'a', 'ab', 'b', 'ba', 'A', 'a,b', 'aba', 'a b', 'bab', "a'b", 'a"b', 'a\\b', 'a#b', ENV_X, 'a.b', 'axb', 'a*', 'aa*'];
/** Header pattern values (never a ','), with characters HAProxy's configuration quotes, escapes or expands. */
const PATTERN_VALUES = ['a', 'ab', 'b', 'ba', 'A', 'a b', "a'b", 'a"b', 'a\\b', 'a#b', ENV_X, 'a.b', 'a*'];
const QUERY_VALUES = ['1', '12', '2', '', '%31', '123', 'a', '1a', '1.2', '1x2', 'a+b', 'aab', '11'];
const QUERY_PATTERN_VALUES = ['1', '12', '2', '%31', '1.2', 'a+b'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'];

/**
 * A regex atom: its text, the literal part a quantifier does not apply to (`%2` of `%2F`), and
 * strings the quantified part matches. Every atom means the same in RE2 and PCRE2.
 */
interface Atom {
  re: string;
  fixed: string;
  unit: readonly string[];
}
const atom = (re: string, unit: readonly string[], fixed = ''): Atom => ({ re, fixed, unit });
/** A quantifier and the repeat counts an example may use. */
const QUANTIFIERS: ReadonlyArray<readonly [string, readonly number[]]> = [
  ['', [1]],
  ['', [1]],
  ['?', [0, 1]],
  ['*', [0, 1, 2]],
  ['+', [1, 2]],
  ['{1,2}', [1, 2]],
];
const PATH_ATOMS = [
  atom('a', ['a']),
  atom('b', ['b']),
  atom('/', ['/']),
  atom('%2F', ['F'], '%2'),
  atom('%2[Ff]', ['F', 'f'], '%2'),
  atom('[ab]', ['a', 'b']),
  atom('[^/]', ['a', 'B', '-']),
  atom('.', ['a', '/']),
  atom('(?:a|ab)', ['a', 'ab']),
  atom('(a|b/)', ['a', 'b/']),
  atom('(?i:a)', ['a', 'A']),
  atom('\\+', ['+']),
  atom('\\.', ['.']),
  atom("'", ["'"]),
];
/** Header regexes cannot match ',' (no '.', no negated class): see the file's comment. */
const HEADER_ATOMS = [
  atom('a', ['a']),
  atom('b', ['b']),
  atom('[ab]', ['a', 'b']),
  atom('(?:a|ab)', ['a', 'ab']),
  atom('(a|b)', ['a', 'b']),
  atom('A', ['A']),
  atom(' ', [' ']),
  atom('\\.', ['.']),
  atom("'", ["'"]),
  atom('"', ['"']),
  atom('#', ['#']),
  atom('\\$', ['$']),
  atom('\\\\', ['\\']),
];
const QUERY_ATOMS = [
  atom('1', ['1']),
  atom('2', ['2']),
  atom('[0-9]', ['1', '7']),
  atom('.', ['a', '1']),
  atom('%31', ['1'], '%3'),
  atom('(?:1|12)', ['1', '12']),
  atom('[^&]', ['1', '=', '?']),
  atom('\\.', ['.']),
  atom('\\+', ['+']),
];

/** A regex with strings it fully matches (checked with RE2), so requests can be built to match it. */
interface Pattern {
  regex: string;
  examples: string[];
}

/** A regex of 1..max atoms, each with an optional quantifier, and up to 3 examples. */
const regexArb = (atoms: readonly Atom[], max: number): fc.Arbitrary<Pattern> =>
  fc
    .array(fc.record({ atom: fc.constantFrom(...atoms), quant: fc.constantFrom(...QUANTIFIERS), picks: fc.array(fc.nat(99), { minLength: 6, maxLength: 6 }) }), {
      minLength: 1,
      maxLength: max,
    })
    .map((parts) => {
      const regex = parts.map((p) => p.atom.re + p.quant[0]).join('');
      const examples = [0, 1, 2].map((e) =>
        parts
          .map((p) => {
            const counts = p.quant[1];
            const n = counts[(p.picks[2 * e] as number) % counts.length] as number;
            let s = p.atom.fixed;
            for (let i = 0; i < n; i++) s += p.atom.unit[((p.picks[2 * e + 1] as number) + i) % p.atom.unit.length];
            return s;
          })
          .join(''),
      );
      return { regex, examples: [...new Set(examples)].filter((x) => re2FullMatch(regex, x)) };
    });
const pathRegexArb: fc.Arbitrary<Pattern> = fc.oneof(
  { arbitrary: regexArb(PATH_ATOMS, 3).map((p) => ({ regex: `/${p.regex}`, examples: p.examples.map((x) => `/${x}`) })), weight: 4 },
  {
    arbitrary: fc.constantFrom<Pattern>(
      { regex: '/a.*', examples: ['/a', '/ab/'] },
      { regex: '.*b', examples: ['/b', '/a/b'] },
      { regex: '/a/?', examples: ['/a', '/a/'] },
      { regex: '/[ab]+/?', examples: ['/ab/', '/b'] },
      { regex: '/a%2[Ff]b', examples: ['/a%2fb', '/a%2Fb'] },
      { regex: '/(a|b)*', examples: ['/', '/ab'] },
      { regex: '/a$', examples: ['/a'] },
      { regex: '/a|/b/?', examples: ['/a', '/b/'] },
    ),
    weight: 1,
  },
);

/** A matcher as written in the entry, and strings its regex (if any) matches. */
interface Matcher {
  json: Json;
  examples: string[];
}

const headerMatcherArb: fc.Arbitrary<Matcher> = fc
  .record({
    name: fc.constantFrom('x-a', 'x-a', 'x-b', 'X-A'),
    kind: fc.constantFrom('Exact', 'Prefix', 'Suffix', 'Regex', 'Present'),
    value: fc.constantFrom(...PATTERN_VALUES),
    regex: fc.oneof(
      { arbitrary: regexArb(HEADER_ATOMS, 3), weight: 5 },
      { arbitrary: fc.constantFrom<Pattern>({ regex: 'a|b', examples: ['a', 'b'] }, { regex: 'ab|', examples: ['ab', ''] }), weight: 1 },
    ),
    invert: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  })
  .map(({ name, kind, value, regex, invert }) => ({
    json: {
      Name: name,
      ...(kind === 'Present' ? { Present: true } : kind === 'Regex' ? { Regex: regex.regex } : { [kind]: value }),
      ...(invert && { Invert: true }),
    },
    examples: kind === 'Regex' ? regex.examples : [],
  }));

const queryMatcherArb: fc.Arbitrary<Matcher> = fc
  .record({ name: fc.constantFrom('x', 'x', 'y', 'x.y'), kind: fc.constantFrom('Exact', 'Regex', 'Present'), value: fc.constantFrom(...QUERY_PATTERN_VALUES), regex: regexArb(QUERY_ATOMS, 3) })
  .map(({ name, kind, value, regex }) => ({
    json: { Name: name, ...(kind === 'Present' ? { Present: true } : kind === 'Regex' ? { Regex: regex.regex } : { Exact: value }) },
    examples: kind === 'Regex' ? regex.examples : [],
  }));

/** Methods as written in the entry (Consul upper-cases them). */
const methodsArb = fc.tuple(fc.subarray(METHODS, { minLength: 1, maxLength: 2 }), fc.boolean()).map(([ms, lower]) => ms.map((m, i) => (lower && i === 0 ? m.toLowerCase() : m)));

/** Header operation values: literals, `%%` (a literal %), and rarely '' (Envoy drops an empty value). */
const opValueArb = fc.oneof({ arbitrary: fc.constantFrom('v', 'w', 'v w', 'p%%c', "v'w", 'v"w', 'v#w', ENV_HOME, 'v\\w'), weight: 8 }, { arbitrary: fc.constant(''), weight: 2 });
const rNameArb = fc.constantFrom('x-r', 'x-r', 'X-R');
/**
 * Header operations on x-r: none, Add, Set, Remove, or Remove with Add or Set (remove runs
 * first). Never Add and Set of the same header: Envoy versions disagree (see envoy-routes.ts).
 * Sometimes one more on x-a or x-b, after route selection (Envoy never re-matches on them).
 */
const opsArb = fc
  .record({
    kind: fc.constantFrom('none', 'add', 'set', 'remove', 'remove+add', 'remove+set'),
    name: rNameArb,
    removeName: rNameArb,
    value: opValueArb,
    extra: fc.oneof({ arbitrary: fc.constant(null), weight: 5 }, { arbitrary: fc.constantFrom<Json>({ Set: { 'x-a': 'set' } }, { Remove: ['x-a'] }, { Add: { 'x-b': 'added' } }), weight: 1 }),
  })
  .map(({ kind, name, removeName, value, extra }) => {
    const ops: { Add: Record<string, string>; Set: Record<string, string>; Remove: string[] } = { Add: {}, Set: {}, Remove: [] };
    if (kind.includes('add')) ops.Add[name] = value;
    if (kind.includes('set')) ops.Set[name] = value;
    if (kind.includes('remove')) ops.Remove.push(removeName);
    if (extra !== null) {
      Object.assign(ops.Add, extra.Add ?? {});
      Object.assign(ops.Set, extra.Set ?? {});
      ops.Remove.push(...((extra.Remove as string[] | undefined) ?? []));
    }
    return ops;
  });

const DESTINATIONS: readonly Json[] = [{ ServiceSubset: 'v1' }, { Service: 'api', ServiceSubset: 'v2' }, { Service: 'api-admin' }, { Service: 'api' }];

/** A generated route: the entry's route, and examples for its regexes (path, then per header and query matcher). */
interface GenRoute {
  entry: { Match: { HTTP: Json }; Destination: Json };
  pathExamples: string[];
  headerExamples: string[][];
  queryExamples: string[][];
}

const routeArb = (index: number): fc.Arbitrary<GenRoute> =>
  fc
    .record({
      path: fc.oneof(
        { arbitrary: fc.constant<Matcher>({ json: {}, examples: [] }), weight: 2 },
        { arbitrary: fc.constantFrom(...EXACT_PATHS).map((v): Matcher => ({ json: { PathExact: v }, examples: [] })), weight: 2 },
        { arbitrary: fc.constantFrom(...PREFIX_PATHS).map((v): Matcher => ({ json: { PathPrefix: v }, examples: [] })), weight: 3 },
        { arbitrary: pathRegexArb.map((p): Matcher => ({ json: { PathRegex: p.regex }, examples: p.examples })), weight: 2 },
      ),
      headers: fc.array(headerMatcherArb, { maxLength: 2 }),
      query: fc.array(queryMatcherArb, { maxLength: 2 }),
      methods: fc.oneof({ arbitrary: fc.constant(null), weight: 3 }, { arbitrary: methodsArb, weight: 1 }),
      destination: fc.constantFrom(...DESTINATIONS),
      rewrite: fc.oneof({ arbitrary: fc.constant(''), weight: 2 }, { arbitrary: fc.constantFrom('/', '/z', '/z/', '/a', '/z%2F', '/a+'), weight: 1 }),
      ops: opsArb,
      marked: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
    })
    .map(({ path, headers, query, methods, destination, rewrite, ops, marked }) => {
      const http: Json = { ...path.json };
      if (headers.length > 0) http.Header = headers.map((h) => h.json);
      if (query.length > 0) http.QueryParam = query.map((q) => q.json);
      if (methods !== null) http.Methods = methods;
      const set = { ...ops.Set, ...(marked && { 'x-route-id': String(index) }) };
      const requestHeaders: Json = {
        ...(Object.keys(ops.Add).length > 0 && { Add: ops.Add }),
        ...(Object.keys(set).length > 0 && { Set: set }),
        ...(ops.Remove.length > 0 && { Remove: ops.Remove }),
      };
      const canRewrite = path.json.PathExact !== undefined || path.json.PathPrefix !== undefined;
      return {
        entry: {
          Match: { HTTP: http },
          Destination: {
            ...destination,
            ...(canRewrite && rewrite !== '' && { PrefixRewrite: rewrite }),
            ...(Object.keys(requestHeaders).length > 0 && { RequestHeaders: requestHeaders }),
          },
        },
        pathExamples: path.examples,
        headerExamples: headers.map((h) => h.examples),
        queryExamples: query.map((q) => q.examples),
      };
    });

/** 2-6 routes; route i (0-based) is route i + 1 of the compiled chain (the probe route is 0). */
const routerArb: fc.Arbitrary<GenRoute[]> = fc.integer({ min: 2, max: 6 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => routeArb(i + 1))));

const methodArb = fc.oneof({ arbitrary: fc.constant('GET'), weight: 4 }, { arbitrary: fc.constantFrom(...METHODS), weight: 1 });
const randomRequestArb: fc.Arbitrary<RawRequest> = fc
  .record({
    method: methodArb,
    path: fc.constantFrom(...REQUEST_PATHS),
    query: fc.constantFrom(...QUERY_STRINGS),
    headers: fc.array(fc.tuple(fc.constantFrom('x-a', 'X-A', 'x-b', 'x-r'), fc.constantFrom(...REQUEST_VALUES)), { maxLength: 4 }),
  })
  .map(({ method, path, query, headers }) => ({ method, path: path + query, headers }));

const tuple = <T>(arbs: Array<fc.Arbitrary<T>>): fc.Arbitrary<T[]> => (arbs.length === 0 ? fc.constant([]) : fc.tuple(...arbs));
/** Values from the first non-empty list. */
const firstOf = (...lists: string[][]): fc.Arbitrary<string> => fc.constantFrom(...(lists.find((l) => l.length > 0) ?? ['']));
/** Mostly `usual`, sometimes one of `perturbations`. */
const mostly = (usual: string, perturbations: readonly string[]): fc.Arbitrary<string> =>
  fc.oneof({ arbitrary: fc.constant(usual), weight: 3 }, { arbitrary: fc.constantFrom(...perturbations), weight: 1 });

/** A path the route's path matcher takes (or nearly). */
function pathFor(route: GenRoute): fc.Arbitrary<string> {
  const http = route.entry.Match.HTTP;
  if (typeof http.PathExact === 'string') return fc.constantFrom('', '', '?x=1', '/', 'b').map((s) => (http.PathExact as string) + s);
  if (typeof http.PathPrefix === 'string') return fc.constantFrom('', 'b', '/', '?x=1', '&x=2', '=2', '/a').map((s) => (http.PathPrefix as string) + s);
  if (typeof http.PathRegex === 'string') {
    const regex = http.PathRegex;
    const candidates = REGEX_CANDIDATES.filter((p) => re2FullMatch(regex, p));
    return fc.oneof({ arbitrary: firstOf(route.pathExamples, candidates, REQUEST_PATHS), weight: 3 }, { arbitrary: fc.constantFrom(...REQUEST_PATHS), weight: 1 });
  }
  return fc.constantFrom(...REQUEST_PATHS);
}

/** A query piece for a query matcher, mostly as is, else with another occurrence of its name before or after, or its name upper-cased. */
function queryPieceFor(m: Json, examples: string[]): fc.Arbitrary<string> {
  const name = m.Name as string;
  let piece: fc.Arbitrary<string>;
  if (typeof m.Exact === 'string') piece = fc.constant(`${name}=${m.Exact}`);
  else if (typeof m.Regex === 'string') {
    const regex = m.Regex;
    piece = firstOf(
      examples,
      QUERY_VALUES.filter((v) => re2FullMatch(regex, v)),
      QUERY_VALUES,
    ).map((v) => `${name}=${v}`);
  } else piece = fc.constantFrom(name, `${name}=`, `${name}=1`);
  return fc
    .tuple(piece, mostly('as is', ['other first', 'other after', 'empty piece first', 'upper-case name']))
    .map(([p, how]) =>
      how === 'other first' ? `${name}=zz&${p}` : how === 'other after' ? `${p}&${name}=zz` : how === 'empty piece first' ? `&${p}` : how === 'upper-case name' ? p.toUpperCase() : p,
    );
}

/**
 * Header lines for a header matcher: a value it takes (any value when inverted; none, mostly, for
 * Present + Invert), mostly sent once, else twice, next to another value, replaced, absent, or
 * under the name in upper case.
 */
function headerLinesFor(m: Json, examples: string[]): fc.Arbitrary<Array<[string, string]>> {
  const name = m.Name as string;
  let value: fc.Arbitrary<string>;
  if (m.Invert === true) value = fc.constantFrom(...REQUEST_VALUES);
  else if (typeof m.Exact === 'string') value = fc.constant(m.Exact);
  else if (typeof m.Prefix === 'string') value = fc.constantFrom('', 'b', ',a', ' b').map((s) => (m.Prefix as string) + s);
  else if (typeof m.Suffix === 'string') value = fc.constantFrom('', 'a', 'b,').map((s) => s + (m.Suffix as string));
  else if (typeof m.Regex === 'string') {
    const regex = m.Regex;
    value = firstOf(
      examples,
      REQUEST_VALUES.filter((v) => re2FullMatch(regex, v)),
      REQUEST_VALUES,
    );
  } else value = fc.constantFrom(...REQUEST_VALUES);
  const perturbations = ['twice', 'other first', 'other last', 'other only', 'absent', 'upper-case name'];
  const how = m.Invert === true && m.Present === true ? mostly('absent', ['once', ...perturbations]) : mostly('once', perturbations);
  return fc.tuple(value, fc.constantFrom(...REQUEST_VALUES), how).map(([v, other, how]): Array<[string, string]> => {
    switch (how) {
      case 'twice':
        return [
          [name, v],
          [name, v],
        ];
      case 'other first':
        return [
          [name, other],
          [name, v],
        ];
      case 'other last':
        return [
          [name, v],
          [name, other],
        ];
      case 'other only':
        return [[name, other]];
      case 'absent':
        return [];
      case 'upper-case name':
        return [[name.toUpperCase(), v]];
      default:
        return [[name, v]];
    }
  });
}

/** A request aimed at one route of the router: its path, its query parameters, its headers, one of its methods. */
function targetedRequestArb(routes: readonly GenRoute[]): fc.Arbitrary<RawRequest> {
  return fc.integer({ min: 0, max: routes.length - 1 }).chain((i) => {
    const route = routes[i] as GenRoute;
    const http = route.entry.Match.HTTP;
    const queryMatchers = (http.QueryParam as Json[] | undefined) ?? [];
    const headerMatchers = (http.Header as Json[] | undefined) ?? [];
    const methods = ((http.Methods as string[] | undefined) ?? []).map((m) => m.toUpperCase());
    return fc
      .record({
        path: pathFor(route),
        pieces: tuple(queryMatchers.map((m, j) => queryPieceFor(m, route.queryExamples[j] ?? []))),
        extraQuery: fc.constantFrom('', '', 'y=2', 'x=2'),
        lines: tuple(headerMatchers.map((m, j) => headerLinesFor(m, route.headerExamples[j] ?? []))),
        clientR: fc.constantFrom<Array<[string, string]>>(
          [],
          [],
          [['x-r', 'c']],
          [
            ['x-r', 'c'],
            ['x-r', 'd'],
          ],
        ),
        method: methods.length > 0 ? fc.oneof({ arbitrary: fc.constantFrom(...methods), weight: 4 }, { arbitrary: fc.constantFrom(...METHODS), weight: 1 }) : methodArb,
      })
      .map(({ path, pieces, extraQuery, lines, clientR, method }) => {
        const query = [...pieces, ...(extraQuery === '' ? [] : [extraQuery])].join('&');
        const full = query === '' ? path : `${path}${path.includes('?') ? '&' : '?'}${query}`;
        return { method, path: full, headers: [...lines.flat(), ...clientR] };
      });
  });
}

interface Case {
  routes: GenRoute[];
  requests: RawRequest[];
}
const caseArb: fc.Arbitrary<Case> = routerArb.chain((routes) =>
  fc.array(fc.oneof(randomRequestArb, targetedRequestArb(routes)), { minLength: REQUESTS, maxLength: REQUESTS }).map((requests) => ({ routes, requests })),
);

// ---------------------------------------------------------------------------------------------
// The system under test.

let agent: ConsulDevAgent;
let baseDir: string;
const apps = new Map<string, ReportingHttpApp>();
const sidecars = new Map<string, SidecarProcess>();
let ports: Record<string, number>;

const port = (name: string): number => {
  const value = ports[name];
  if (value === undefined) throw new Error(`no port ${name}`);
  return value;
};
const web = (): SidecarProcess => sidecars.get('web') as SidecarProcess;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  body: string;
  report: (HttpReport & { error?: string }) | undefined;
}

function parseResponse(raw: Buffer): Answer {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, body: `incomplete response '${raw.toString().slice(0, 200)}'`, report: undefined };
  const [statusLine = '', ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const lengthLine = lines.find((l) => /^content-length:/i.test(l));
  let body = raw.subarray(end + 4);
  if (lengthLine !== undefined) body = body.subarray(0, Number(lengthLine.slice(lengthLine.indexOf(':') + 1).trim()));
  const text = body.toString();
  let report: Answer['report'];
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null && typeof (parsed as Json).id === 'string') report = parsed as Answer['report'];
  } catch {
    report = undefined;
  }
  return { status: Number(statusLine.split(' ')[1] ?? 0), body: text, report };
}

/** One request through web's api upstream, on a new connection, exactly as given (a raw HTTP/1.1 client). */
function send(req: RawRequest, timeoutMs = 5_000): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (answer: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const socket = netConnect(port('webToApi'), '127.0.0.1');
    const timer = setTimeout(() => done({ status: 0, body: `no response within ${timeoutMs} ms`, report: undefined }), timeoutMs);
    socket.on('connect', () => {
      const lines = [`${req.method} ${req.path} HTTP/1.1`, 'host: api', ...req.headers.map(([k, v]) => `${k}: ${v}`), 'connection: close', '', ''];
      socket.write(lines.join('\r\n'));
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', (err) => done({ status: 0, body: `error: ${err.message}`, report: undefined }));
    socket.on('close', () => done(parseResponse(Buffer.concat(chunks))));
  });
}

const who = (a: Answer): string => (a.report !== undefined ? `${a.report.id} ${a.status}` : `status ${a.status}: ${a.body.slice(0, 120).replace(/\s+/g, ' ')}`);

const probePath = (gen: number): string => `/__probe/${gen}`;
const probeRoute = (gen: number): Json => ({
  Match: { HTTP: { PathExact: probePath(gen) } },
  Destination: { Service: 'api-admin', RequestHeaders: { Set: { 'x-probe': String(gen) } } },
});

/** Web serves router `gen`: its probe answered by api-admin with x-probe = gen, twice in a row (no old worker in between). */
async function waitForRouter(gen: number): Promise<void> {
  let streak = 0;
  let last = '';
  await waitFor(
    `router ${gen} to apply (${probePath(gen)} answered by api-admin with x-probe ${gen})`,
    async () => {
      const a = await send({ method: 'GET', path: probePath(gen), headers: [] });
      last = `${who(a)} x-probe ${JSON.stringify(a.report?.headers['x-probe'])}`;
      streak = a.report?.id === 'api-admin' && a.report.headers['x-probe']?.[0] === String(gen) ? streak + 1 : 0;
      return streak >= 2 ? true : undefined;
    },
    APPLY_TIMEOUT_MS,
    30,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last answer: ${last}`);
  });
}

/** Web's warnings and errors since log line `mark`, for messages. */
function webProblems(mark: number): string {
  return web()
    .logs.slice(mark)
    .filter((l) => l.level === 'warn' || l.level === 'error')
    .map((l) => JSON.stringify(l).slice(0, 600))
    .join('\n');
}

/** The instances a target's endpoints are. */
function instancesOf(chain: CompiledChain, targetId: string): string[] {
  const target = chain.Targets[targetId];
  if (target === undefined) return [];
  if (target.Service === 'api-admin') return ['api-admin'];
  if (target.Service !== 'api') return [];
  if ((target.ServiceSubset ?? '') === '') return ['api-v1', 'api-v2'];
  return [`api-${target.ServiceSubset}`];
}

/** The frontend of web's api upstream in the haproxy.cfg web serves, for messages. */
async function upstreamFrontend(runDir: unknown): Promise<string> {
  if (typeof runDir !== 'string') return '(no run directory logged)';
  try {
    const cfg = await readFile(join(runDir, 'haproxy.cfg'), 'utf8');
    const section = cfg.split(/\n(?=\S)/).find((s) => s.startsWith('frontend upstream_') && s.includes(`:${port('webToApi')}`));
    return section ?? '(no upstream frontend in haproxy.cfg)';
  } catch (err) {
    return `(${(err as Error).message})`;
  }
}

const showRequest = (r: RawRequest): string => `${r.method} ${r.path}${r.headers.map(([k, v]) => ` [${k}: ${v}]`).join('')}`;
const showHeaders = (get: (name: string) => string[]): string =>
  COMPARED_HEADERS.map((n) => [n, get(n)] as const)
    .filter(([, v]) => v.length > 0)
    .map(([n, v]) => `${n}=${JSON.stringify(v)}`)
    .join(' ');
const showExpected = (chain: CompiledChain, d: EnvoyDecision): string =>
  `route ${d.routeIndex} -> ${instancesOf(chain, d.targetId).join('|')} ${d.path} ${showHeaders((n) => headerValues(d.headers, n))}`;
const showGot = (a: Answer): string => (a.report === undefined ? who(a) : `${a.report.id} ${a.status} ${a.report.method} ${a.report.path} ${showHeaders((n) => a.report?.headers[n] ?? [])}`);

// ---------------------------------------------------------------------------------------------

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-routing-diff-'));
  const names = [...INSTANCES.flatMap((i) => [i.key, `${i.key}Sidecar`]), 'web', 'webSidecar', 'webToApi'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  for (const name of ['web', 'api', 'api-admin']) await agent.put('/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
  await agent.put('/v1/config', { Kind: 'service-resolver', Name: 'api', Subsets: VERSION_SUBSETS });
  for (const instance of INSTANCES) {
    apps.set(instance.id, await startReportingHttpApp(instance.id, port(instance.key)));
    await registerMeshServiceWithMeta(agent, { id: instance.id, name: instance.name, port: port(instance.key), sidecarPort: port(`${instance.key}Sidecar`) }, instance.meta);
  }
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: port('web'),
    sidecarPort: port('webSidecar'),
    upstreams: [{ destinationName: 'api', localBindPort: port('webToApi') }],
  });
  await Promise.all([...INSTANCES.map((i) => i.id), 'web'].map((s) => startReadySidecar(sidecars, s, agent.httpAddr, baseDir)));
  // Before any router: both api instances answer through web.
  const seen = new Set<string>();
  await waitFor(
    'api-v1 and api-v2 to answer through web',
    async () => {
      const a = await send({ method: 'GET', path: '/', headers: [] });
      if (a.status === 200 && a.report !== undefined) seen.add(a.report.id);
      return seen.has('api-v1') && seen.has('api-v2') ? true : undefined;
    },
    APPLY_TIMEOUT_MS,
    20,
  );
});

after(async () => {
  await Promise.all([...sidecars.values()].map((s) => s.stop()));
  await Promise.all([...apps.values()].map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

/** A compiled chain (as Consul answers it) of `routes` to api-admin, then Consul's catch-all to api: for the oracle's own cases. */
function handChain(routes: ReadonlyArray<{ http: Json; dest?: Json }>): CompiledChain {
  const resolver = (target: string): ChainNode => ({ Type: 'resolver', Name: target, Resolver: { Target: target } });
  return {
    ServiceName: 'api',
    Protocol: 'http',
    StartNode: 'router:api.default.default',
    Nodes: {
      'router:api.default.default': {
        Type: 'router',
        Name: 'api.default.default',
        Routes: [
          ...routes.map(({ http, dest }) => ({ Definition: { Match: { HTTP: http }, Destination: { Service: 'api-admin', ...dest } }, NextNode: 'resolver:api-admin.default.default.dc1' })),
          { Definition: { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: 'api' } }, NextNode: 'resolver:api.default.default.dc1' },
        ],
      },
      'resolver:api-admin.default.default.dc1': resolver('api-admin.default.default.dc1'),
      'resolver:api.default.default.dc1': resolver('api.default.default.dc1'),
    },
    Targets: {},
  };
}

describe('HTTP routing, differential: web’s sidecar (Consul + HAProxy) against Envoy’s semantics on Consul’s compiled chain', () => {
  test('the oracle takes hand-checked Envoy decisions', () => {
    const chain = handChain([
      { http: { PathPrefix: '/pq?mode=x' } },
      { http: { PathExact: '/exact' } },
      { http: { PathRegex: '/re/[a-z]+' } },
      { http: { PathPrefix: '/h', Header: [{ Name: 'X-Prefix', Prefix: 'ab' }] } },
      { http: { PathPrefix: '/inv', Header: [{ Name: 'x-inv', Exact: '1', Invert: true }] } },
      { http: { PathPrefix: '/pinv', Header: [{ Name: 'x-pinv', Present: true, Invert: true }] } },
      { http: { PathPrefix: '/m/', Methods: ['GET', 'DELETE'] } },
      { http: { PathPrefix: '/q', QueryParam: [{ Name: 'v', Exact: '1' }] } },
      { http: { PathPrefix: '/qp', QueryParam: [{ Name: 'k', Present: true }] } },
      { http: { PathPrefix: '/admin' }, dest: { PrefixRewrite: '/', RequestHeaders: { Add: { 'X-R': 'p%%c' }, Set: { 'x-s': '' }, Remove: ['x-r'] } } },
    ]);
    const route = (method: string, path: string, headers: Array<[string, string]> = [], options = {}): number => envoyRoute(chain, { method, path, headers }, options).routeIndex;
    const cases: Array<[string, number, number]> = [
      // Envoy matches a prefix on the path without its query: a prefix holding '?' never matches.
      ['prefix holding a query', route('GET', '/pq?mode=xyz'), 10],
      ['… as the API reference reads', route('GET', '/pq?mode=xyz', [], { prefixIncludesQuery: true }), 0],
      ['exact ignores the query', route('GET', '/exact?x=1'), 1],
      ['exact, trailing slash', route('GET', '/exact/'), 10],
      ['regex ignores the query', route('GET', '/re/abc?x=1'), 2],
      ['regex is a full match', route('GET', '/re/abc/d'), 10],
      [
        'repeated header joined (ab1,zz)',
        route('GET', '/h', [
          ['x-prefix', 'ab1'],
          ['X-Prefix', 'zz'],
        ]),
        3,
      ],
      [
        'repeated header joined (zz,ab1)',
        route('GET', '/h', [
          ['x-prefix', 'zz'],
          ['x-prefix', 'ab1'],
        ]),
        10,
      ],
      ['invert on an absent header', route('GET', '/inv'), 10],
      [
        'invert on 1,1',
        route('GET', '/inv', [
          ['x-inv', '1'],
          ['x-inv', '1'],
        ]),
        4,
      ],
      ['present + invert, absent', route('GET', '/pinv'), 5],
      ['present + invert, empty value', route('GET', '/pinv', [['x-pinv', '']]), 10],
      ['method listed', route('DELETE', '/m/x'), 6],
      ['lower-case method', route('get', '/m/x'), 10],
      ['query: first occurrence', route('GET', '/q?v=2&v=1'), 10],
      ['query: value-less piece before', route('GET', '/q?w&v=1'), 7],
      ['query: ; does not separate', route('GET', '/q?v=1;a'), 10],
      ['query: a value-less name is present', route('GET', '/qp?k'), 8],
    ];
    const wrong = cases.filter(([, got, want]) => got !== want).map(([what, got, want]) => `${what}: route ${got}, want ${want}`);
    assert.deepEqual(wrong, []);
    const rewritten = envoyRoute(chain, {
      method: 'GET',
      path: '/admin/users?x=1',
      headers: [
        ['x-r', 'c'],
        ['x-s', 'keep'],
      ],
    });
    assert.equal(rewritten.path, '//users?x=1');
    assert.deepEqual(rewritten.headers, [
      ['x-s', 'keep'],
      ['x-r', 'p%c'],
      ['x-envoy-original-path', '/admin/users?x=1'],
    ]);
  });

  test(`seeded service-routers and requests aimed at the edges decide as Envoy (seed ${SEED})`, async () => {
    const startedAt = performance.now();
    const cases = fc.sample(caseArb, { seed: SEED, numRuns: ROUTERS });
    note(
      `seed ${SEED} (ROUTING_DIFF_SEED), PathPrefix on the path ${PREFIX_WITH_QUERY ? 'with' : 'without'} its query: ${cases.length} routers of ${cases.map((c) => c.routes.length).join(', ')} routes, ${REQUESTS} requests each`,
    );
    const mismatches: string[] = [];
    const failedRouters: string[] = [];
    /** For each router with mismatches: its routes and the haproxy.cfg frontend web served for it. */
    const configs: string[] = [];
    /** Compiled route index → requests it took (the probe is 0; 'catch-all' for Consul's appended route). */
    const perIndex = new Map<string, number>();
    const perRouter: string[] = [];
    let compared = 0;
    let rewritten = 0;
    let repeated = 0;
    const runDir = web().find('created run directory')?.runDir;

    for (let k = 0; k < cases.length; k++) {
      const { routes, requests } = cases[k] as Case;
      const gen = k + 1;
      const mark = web().logs.length;
      const entries = routes.map((r) => r.entry);
      const routerJson = JSON.stringify(entries);
      await agent.put('/v1/config', { Kind: 'service-router', Name: 'api', Routes: [probeRoute(gen), ...entries] });
      const applyStart = performance.now();
      try {
        await waitForRouter(gen);
      } catch (err) {
        failedRouters.push(`router ${gen} (seed ${SEED}) was not applied: ${(err as Error).message}\n  routes: ${routerJson}\n  web's warnings/errors:\n${webProblems(mark)}`);
        continue;
      }
      const applyMs = msSince(applyStart);
      const { Chain: chain } = await agent.get<{ Chain: CompiledChain }>('/v1/discovery-chain/api');
      const router = chain.Nodes[chain.StartNode];
      const first = router?.Routes?.[0]?.Definition.Match?.HTTP?.PathExact;
      assert.equal(first, probePath(gen), `Consul's chain is router ${gen}'s (its first route is the probe)`);
      const catchAll = (router?.Routes?.length ?? 0) - 1;
      const hits = new Set<number>();
      let routerMismatches = 0;
      for (const req of requests) {
        const expected = envoyRoute(chain, { ...req, headers: [['host', 'api'], ...req.headers] }, { prefixIncludesQuery: PREFIX_WITH_QUERY });
        const got = await send(req);
        compared++;
        hits.add(expected.routeIndex);
        const key = expected.routeIndex === catchAll ? 'catch-all' : String(expected.routeIndex);
        perIndex.set(key, (perIndex.get(key) ?? 0) + 1);
        if (expected.path !== req.path) rewritten++;
        const names = req.headers.map(([n]) => n.toLowerCase());
        if (new Set(names).size !== names.length) repeated++;
        const problems: string[] = [];
        const report = got.report;
        if (report === undefined || got.status !== 200) problems.push('no report');
        else {
          if (!instancesOf(chain, expected.targetId).includes(report.id)) problems.push('instance');
          if (report.method !== req.method) problems.push('method');
          if (report.path !== expected.path) problems.push('path');
          for (const name of COMPARED_HEADERS) {
            if (JSON.stringify(report.headers[name] ?? []) !== JSON.stringify(headerValues(expected.headers, name))) problems.push(name);
          }
        }
        if (problems.length > 0) {
          routerMismatches++;
          mismatches.push(
            `router ${gen} | ${showRequest(req)} | want ${showExpected(chain, expected)} | got ${showGot(got)} | differs in ${problems.join(', ')}\n    route ${expected.routeIndex}: ${JSON.stringify(router?.Routes?.[expected.routeIndex]?.Definition)}`,
          );
        }
      }
      if (routerMismatches > 0) configs.push(`router ${gen}: routes ${routerJson}\nweb's haproxy.cfg, api upstream frontend:\n${await upstreamFrontend(runDir)}`);
      perRouter.push(
        `router ${gen}: ${routes.length} routes, applied in ${applyMs} ms, routes taking requests ${[...hits].sort((a, b) => a - b).join(',')} (catch-all ${catchAll}), ${routerMismatches} mismatch(es)`,
      );
    }

    const ms = msSince(startedAt);
    const order = [...perIndex.keys()].sort((a, b) => (a === 'catch-all' ? 1 : b === 'catch-all' ? -1 : Number(a) - Number(b)));
    note(
      `${compared} requests compared over ${cases.length - failedRouters.length} of ${cases.length} routers in ${ms} ms; ${mismatches.length} mismatch(es); ${failedRouters.length} router(s) not applied`,
    );
    note(`requests per compiled route index: ${order.map((k) => `${k}: ${perIndex.get(k)}`).join(', ')}`);
    note(`${rewritten} requests rewritten (PrefixRewrite), ${repeated} with a repeated header name`);
    for (const line of perRouter) note(line);
    const report = [...failedRouters, ...mismatches.slice(0, 60)];
    if (mismatches.length > 60) report.push(`… and ${mismatches.length - 60} more`);
    if (configs.length > 0) report.push('', ...configs);
    assert.ok(
      report.length === 0,
      `routing differs from Envoy's (seed ${SEED}; rerun with ROUTING_DIFF_SEED=${SEED}${PREFIX_WITH_QUERY ? ' ROUTING_DIFF_PREFIX_WITH_QUERY=1' : ''}; web's run directory, removed after the run: ${String(runDir)}):\n` +
        `router | request | expected (oracle) | got (app's report) | what differs\n${report.join('\n')}`,
    );
    // A little slack for the last request's connection to close before the after() hook.
    await sleep(10);
  });
});
