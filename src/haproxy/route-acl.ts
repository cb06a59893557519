/**
 * A service-router route's match as HAProxy 2.6.12 ACL conditions, with Envoy's semantics
 * (../shared/L7.md §2.1; src/domain/routes.ts). PURE.
 *
 * Renderings (`h` a header name, `cnt` = `req.fhdr_cnt(h)`, `A(R)` = anchoredRegex(R)):
 * - PathExact `{ path -m str v }`; PathPrefix `{ path -m beg v }` (on the path without its query:
 *   Envoy strips the query before prefix matching since 1.13.1 (CVE-2020-8595; its API docs still
 *   say otherwise, envoyproxy/envoy#15592), so a prefix holding '?' never matches; `/` or empty
 *   takes every request, as routes.ts's matchesEverything says: only an
 *   asterisk-form `OPTIONS *` or an absolute-form URI without a path differ); PathRegex
 *   `{ path -m reg A(R) }`. All raw, never decoded, case-sensitive, like Envoy 1.16's listeners.
 * - Methods `{ method GET POST }`: exact and case-sensitive (a request's `get` is not `GET`).
 * - Header Present `{ cnt gt 0 }`, inverted `{ cnt eq 0 }` (the one inversion a missing header meets).
 * - Header Exact v `{ cnt eq 1 } { req.fhdr(h) -m str v }`; inverted `{ cnt gt 1 } || { cnt eq 1 }
 *   !{ req.fhdr(h) -m str v }`: the occurrences of a repeated header joined with ',' never equal a
 *   value without ','.
 * - Header Prefix p `{ req.fhdr(h,1) -m beg p }` (first occurrence), Suffix s `{ req.fhdr(h,-1)
 *   -m end s }` (last); inverted `{ cnt gt 0 } !{ … }`.
 * - Header Regex R `{ cnt eq 1 } { req.fhdr(h) -m reg A(R) }`; inverted `{ cnt gt 1 } || { cnt eq 1 }
 *   !{ … }` when R never matches a ',' (mayMatchComma).
 * - Query Present `{ query -m reg (?:^|&)N(?:=|&|\z) }`; Exact `{ query -m reg ^(?:(?!N(?:=|&|\z))
 *   [^&]*&)*N=V(?:&|\z) }` (the first occurrence of N, split on '&' only, `N` alone = `N=`); Regex:
 *   the presence term and `{ query,regsub(<first value of N>,\1) -m reg A(R) }`.
 *
 * Approximation (see approximations()): without Lua HAProxy cannot join a repeated header, so a
 * pattern that can straddle the joining ',' (an exact, prefix or suffix value holding ',', a regex
 * that may match ',') is matched on a header sent once only: a header sent several times matches
 * neither the matcher nor its inversion. Regexes also carry src/domain/regex.ts's dialect notes.
 *
 * Quoting: every word goes through quoteArg; sample-fetch arguments get HAProxy's second level of
 * quoting (cfg §2.2); a pattern word that reads as a flag gets `--`; a pattern `}` (which would
 * close the `{ … }`) becomes a regex. Refused with MODEL_INVALID: what HAProxy cannot carry or no
 * request can hold the same way (header names that are not HTTP tokens, header values with CR, LF
 * or NUL, methods that are not tokens or that Envoy would read as regex, empty query names,
 * regexes re2Problem refuses, NUL anywhere, arguments too long for HAProxy's argument buffer).
 */
import { anchoredRegex, mayMatchComma, re2Problem } from '../domain/regex.js';
import { HTTP_TOKEN, type HeaderMatch, type QueryParamMatch, type RouteMatch } from '../domain/routes.js';
import { HaproxyConnectError } from '../errors.js';
import { quoteArg } from './quote.js';

/** One ACL of a condition: `expression` is what goes between `{ }` (or after `acl <name>`). */
export interface AclTerm {
  negated: boolean;
  expression: string;
}
/** ANDed ACL terms. */
type Conjunction = readonly AclTerm[];
/** ORed conjunctions: [] never matches, [[]] always does. */
type Dnf = readonly Conjunction[];

const ALWAYS: Dnf = [[]];
const NEVER: Dnf = [];

/** A token without the characters Envoy's method regex (Consul joins the methods with '|') would read as syntax. */
const PLAIN_METHOD = /^[!#%&'_`~0-9A-Za-z-]+$/;
/** A sample-fetch argument that needs no second-level quoting. */
const BARE_SAMPLE_ARG = /^[A-Za-z0-9_.:/-]+$/;
/**
 * Sample-fetch arguments are copied into HAProxy's trash buffer (tune.bufsize, 16384 by default):
 * from 16384 characters `haproxy -c` fails ("too small buffer", measured). No request could hold
 * such a header or query name anyway.
 */
const MAX_SAMPLE_ARG = 8192;
/**
 * The longest query parameter name or exact value: both become PCRE2 literal text (the name twice),
 * about 2 bytes of compiled code a character, and PCRE2 refuses patterns above 64 KiB of code
 * (LINK_SIZE 2, measured: 32760 literal characters compile, 32761 do not).
 */
const MAX_QUERY_LITERAL = 4096;
const MAX_SHOWN_CHARS = 120;

/**
 * The route's match as alternatives ORed by the caller (`A || B`), each a space-separated
 * conjunction of anonymous ACLs; [''] when the match takes every request (with no terms of its
 * own, the caller must then write no `if` at all: HAProxy 2.6.12 accepts a bare `if` and never
 * matches it), [] when it takes none (Envoy's names and values that no request can carry the same
 * way, e.g. a query value with '&'). Throws MODEL_INVALID for what cannot be expressed (see the
 * module comment).
 */
export function routeConditions(match: RouteMatch): string[] {
  return routeConditionTerms(match).map((conjunction) => conjunction.map((term) => `${term.negated ? '!' : ''}{ ${term.expression} }`).join(' '));
}

/**
 * routeConditions as terms, for a caller that must write named ACLs (`acl <name> <expression>`,
 * referenced as `[!]<name>`): HAProxy 2.6 refuses a line of more than MAX_LINE_WORDS words, and a
 * route with a path, methods and a few header and query matchers passes it in one alternative.
 */
export function routeConditionTerms(match: RouteMatch): AclTerm[][] {
  // Every part is built (and so validated) before any is combined.
  const parts = [pathDnf(match.path), methodsDnf(match.methods), ...match.headers.map(headerDnf), ...match.queryParams.map(queryParamDnf)];
  let result: Dnf = ALWAYS;
  for (const part of parts) result = result.flatMap((left) => part.map((right) => [...left, ...right]));
  return result.map((conjunction) => [...conjunction]);
}

/** The matchers of `match` that routeConditions can only approximate (empty: it renders Envoy's answer for every request). */
export function approximations(match: RouteMatch): string[] {
  return match.headers
    .filter((header) => header.match.kind !== 'present' && (header.match.kind === 'regex' ? mayMatchComma(header.match.value) : header.match.value.includes(',')))
    .map(
      (header) =>
        `header ${JSON.stringify(header.name)} ${header.match.kind} ${shown(header.match.kind === 'present' ? '' : header.match.value)}: a repeated header (values joined with ',') matches neither it nor its inversion`,
    );
}

/** HAProxy 2.6 refuses (fatally) a configuration line of more than 64 words (MAX_LINE_ARGS). */
export const MAX_LINE_WORDS = 64;

/** How many haproxy.cfg words a rendered condition takes, for MAX_LINE_WORDS (quoting as quoteArg writes it). */
export function conditionWords(condition: string): number {
  let words = 0;
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < condition.length; i++) {
    const char = condition.charAt(i);
    if (quote === undefined && char === ' ') {
      inWord = false;
      continue;
    }
    if (!inWord) words++;
    inWord = true;
    if (char === '\\' && quote !== "'") i++;
    else if (quote === undefined && (char === "'" || char === '"')) quote = char;
    else if (char === quote) quote = undefined;
  }
  return words;
}

function shown(value: string): string {
  return JSON.stringify(value.length > MAX_SHOWN_CHARS ? `${value.slice(0, MAX_SHOWN_CHARS)}…` : value);
}

function refuse(what: string, value: string, reason: string): never {
  throw new HaproxyConnectError('MODEL_INVALID', `Cannot render the route's ${what} ${shown(value)} as an HAProxy condition: ${reason}`);
}

function checkRegex(what: string, pattern: string): void {
  if (pattern.includes('\0')) refuse(what, pattern, 'HAProxy cannot carry a NUL character');
  const problem = re2Problem(pattern);
  if (problem !== undefined) refuse(what, pattern, problem);
}

function acl(words: readonly string[], negated = false): AclTerm {
  return { negated, expression: words.join(' ') };
}

/** A sample fetch or converter argument: second-level quoting (inside `"`, `\` and `"` escaped), cfg §2.2. */
function sampleArg(what: string, value: string): string {
  if (value.includes('\0')) refuse(what, value, 'HAProxy cannot carry a NUL character');
  const written = BARE_SAMPLE_ARG.test(value) ? value : `"${value.replace(/[\\"]/g, '\\$&')}"`;
  if (written.length > MAX_SAMPLE_ARG) refuse(what, value, `HAProxy's argument buffer takes ${MAX_SAMPLE_ARG} characters at most`);
  return written;
}

/** `fetch(arg,…)` as one haproxy.cfg word. */
function fetchWord(what: string, fetch: string, args: readonly string[]): string {
  return quoteArg(`${fetch}(${args.map((arg) => sampleArg(what, arg)).join(',')})`);
}

/** `{ <fetch> -m str|beg|end <value> }` for a non-empty value. */
function literalTerm(fetch: string, method: 'str' | 'beg' | 'end', value: string, negated = false): AclTerm {
  // `}` alone would close the anonymous ACL: the same test as a regex.
  if (value === '}') return acl([fetch, '-m', 'reg', quoteArg({ str: '^\\}\\z', beg: '^\\}', end: '\\}\\z' }[method])], negated);
  return acl([fetch, '-m', method, ...(value.startsWith('-') ? ['--'] : []), quoteArg(value)], negated);
}

function regexTerm(fetch: string, pattern: string, negated = false): AclTerm {
  return acl([fetch, '-m', 'reg', quoteArg(anchoredRegex(pattern))], negated);
}

function pathDnf(path: RouteMatch['path']): Dnf {
  if (path === undefined) return ALWAYS;
  const value = path.value;
  if (value.includes('\0')) refuse(`path ${path.kind}`, value, 'HAProxy cannot carry a NUL character');
  switch (path.kind) {
    case 'exact':
      return [[value === '' ? acl(['path', '-m', 'len', '0']) : literalTerm('path', 'str', value)]];
    case 'prefix':
      return value === '' || value === '/' ? ALWAYS : [[literalTerm('path', 'beg', value)]];
    case 'regex':
      checkRegex('path regex', value);
      return [[regexTerm('path', value)]];
  }
}

function methodsDnf(methods: readonly string[]): Dnf {
  if (methods.length === 0) return ALWAYS;
  for (const method of methods) {
    if (!PLAIN_METHOD.test(method)) refuse('method', method, 'a method must be an HTTP token without the characters $ * + . ^ | (Envoy matches the methods as one regex)');
  }
  const flagEnd = methods.some((method) => method.startsWith('-')) ? ['--'] : [];
  return [[acl(['method', ...flagEnd, ...methods.map((method) => quoteArg(method))])]];
}

function headerDnf(header: HeaderMatch): Dnf {
  const name = header.name;
  const what = `header ${JSON.stringify(name)}`;
  if (!HTTP_TOKEN.test(name)) refuse('header name', name, 'a header name must be an HTTP token (pseudo-headers such as :authority are not supported)');
  const count = (op: 'eq' | 'gt', n: number): AclTerm => acl([fetchWord(what, 'req.fhdr_cnt', [name]), op, String(n)]);
  const present = count('gt', 0);
  const once = count('eq', 1);
  const match = header.match;
  if (match.kind === 'present') return [[header.invert ? count('eq', 0) : present]];
  const value = match.value;
  if (match.kind === 'regex') {
    checkRegex(`${what} regex`, value);
    const test = (negated: boolean) => regexTerm(fetchWord(what, 'req.fhdr', [name]), value, negated);
    if (!header.invert) return [[once, test(false)]];
    return mayMatchComma(value) ? [[once, test(true)]] : [[count('gt', 1)], [once, test(true)]];
  }
  if (/[\0\r\n]/.test(value)) refuse(`${what} ${match.kind} value`, value, 'a header value cannot hold CR, LF or NUL');
  const joinable = !value.includes(',');
  if (match.kind === 'exact') {
    const fetch = fetchWord(what, 'req.fhdr', [name]);
    const test = (negated: boolean) => (value === '' ? acl([fetch, '-m', 'len', '0'], negated) : literalTerm(fetch, 'str', value, negated));
    if (!header.invert) return [[once, test(false)]];
    return joinable ? [[count('gt', 1)], [once, test(true)]] : [[once, test(true)]];
  }
  // Prefix and suffix: an empty one is true of any value, so its inversion never matches.
  if (value === '') return header.invert ? NEVER : [[present]];
  const fetch = fetchWord(what, 'req.fhdr', [name, match.kind === 'prefix' ? '1' : '-1']);
  const test = (negated: boolean) => literalTerm(fetch, match.kind === 'prefix' ? 'beg' : 'end', value, negated);
  const guard = joinable ? present : once;
  if (!header.invert) return [joinable ? [test(false)] : [once, test(false)]];
  return [[guard, test(true)]];
}

/** `text` as PCRE2 literal text: letters, digits and `_` as they are, other ASCII escaped, the rest raw (bytes in PCRE2's non-UTF mode). */
export function pcreLiteral(text: string): string {
  return Array.from(text, (char) => {
    const code = char.charCodeAt(0);
    if (/^[A-Za-z0-9_]$/.test(char) || code > 0x7f) return char;
    if (code < 0x20 || code === 0x7f) return `\\x${code.toString(16).padStart(2, '0')}`;
    return `\\${char}`;
  }).join('');
}

function queryParamDnf(param: QueryParamMatch): Dnf {
  const name = param.name;
  const what = `query parameter ${JSON.stringify(name)}`;
  if (name === '') refuse('query parameter name', name, 'a query parameter name cannot be empty');
  const match = param.match;
  for (const text of [name, match.kind === 'present' ? '' : match.value]) {
    if (text.includes('\0')) refuse(what, text, 'HAProxy cannot carry a NUL character');
  }
  if (match.kind === 'regex') checkRegex(`${what} regex`, match.value);
  for (const text of [name, match.kind === 'exact' ? match.value : '']) {
    if (text.length > MAX_QUERY_LITERAL) refuse(what, text, `longer than ${MAX_QUERY_LITERAL} characters, more than HAProxy's PCRE2 can compile into its regex`);
  }
  const n = pcreLiteral(name);
  const presentTerm = acl(['query', '-m', 'reg', quoteArg(`(?:^|&)${n}(?:=|&|\\z)`)]);
  // The parameters before the first occurrence of the name.
  const before = `^(?:(?!${n}(?:=|&|\\z))[^&]*&)*`;
  let terms: AclTerm[];
  switch (match.kind) {
    case 'present':
      terms = [presentTerm];
      break;
    case 'exact': {
      const valuePattern = match.value === '' ? '=?' : `=${pcreLiteral(match.value)}`;
      terms = [acl(['query', '-m', 'reg', quoteArg(`${before}${n}${valuePattern}(?:&|\\z)`)])];
      break;
    }
    case 'regex': {
      // regsub leaves a query without the name as it is: the presence term comes first.
      const firstValue = `query,regsub(${sampleArg(what, `${before}${n}(?:=([^&]*))?(?:&.*)?\\z`)},${sampleArg(what, '\\1')})`;
      terms = [presentTerm, regexTerm(quoteArg(firstValue), match.value)];
    }
  }
  // Envoy splits the query at '&' and a parameter at its first '=': no name holds either, no value '&'.
  if (/[&=]/.test(name) || (match.kind === 'exact' && match.value.includes('&'))) return NEVER;
  return [terms];
}
