/**
 * routeConditions (src/haproxy/route-acl.ts) and re2Problem (src/domain/regex.ts): renderings,
 * refusals, and differential tests against the real HAProxy (HAPROXY_BIN). Each batch renders N
 * routes as `http-request return … string m<i> if <conditions>` rules (first match wins, then 404)
 * on a 127.0.0.1 port, sends raw HTTP/1.1 requests, and compares HAProxy's answer with routeVerdict,
 * a reference evaluator of Envoy's semantics (L7.md §2.1). The one approximation routeConditions
 * makes (a repeated header against a pattern that can straddle the joining ',') is not compared
 * with Envoy: there the documented answer (neither the matcher nor its inversion matches) is
 * asserted instead, and counted. Requests where a header regex meets a non-ASCII value (bytes in
 * PCRE2, code points in RE2) are skipped. Seeds: ROUTE_ACL_SEED (a number, or `random`), else a fixed one; printed on failure.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { RE2JS } from 're2js';
import { REPO_ROOT } from '../../devtools/consul-dev-agent.js';
import { freePorts } from '../../devtools/ports.js';
import { anchoredRegex, mayMatchComma, re2Problem } from '../../src/domain/regex.js';
import type { HeaderMatch, QueryParamMatch, RouteMatch, ValueMatch } from '../../src/domain/routes.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { serveChecked, stopAll } from '../helpers/haproxy-once.js';
import { METHODS, NAMES, QUERY_NAMES, type Req, nearReq, reqArb, routeArb, send, rawRequest } from '../helpers/matcher-arbs.js';
import { type AclTerm, approximations, conditionWords, MAX_LINE_WORDS, routeConditions, routeConditionTerms } from '../../src/haproxy/route-acl.js';

/** A fixed seed keeps CI reproducible; ROUTE_ACL_SEED=random explores (the seed is printed on failure). */
const SEED_ENV = process.env['ROUTE_ACL_SEED'];
const SEED = SEED_ENV === 'random' ? Math.floor(Math.random() * 2 ** 31) : Number(SEED_ENV ?? 20_261_204);
const none: RouteMatch = { methods: [], headers: [], queryParams: [] };
const hdr = (name: string, match: ValueMatch, invert = false): RouteMatch => ({ ...none, headers: [{ name, match, invert }] });
const qp = (name: string, match: QueryParamMatch['match']): RouteMatch => ({ ...none, queryParams: [{ name, match }] });

describe('re2Problem and anchoredRegex', () => {
  test('anchors for a full match with \\z', () => assert.equal(anchoredRegex('a|b'), '^(?:a|b)\\z'));
  for (const ok of ['', '/api/v[0-9]+(/.*)?', '(?i)abc', '\\pL+\\p{Nd}', '[[:alpha:]]', '(?P<v>x)', '\\Qa)\\E', '\\x41', '[.]', 'a{2,3}', '\\012']) {
    test(`accepts ${JSON.stringify(ok)}`, () => assert.equal(re2Problem(ok), undefined));
  }
  const refused: Record<string, readonly string[]> = {
    'RE2 refuses': ['a(?=b)', '(a)\\1', 'a++', 'a)(?:b', '(?:a{100}){20}'],
    'once anchored': ['\\Qab'],
    'non-ASCII': ['é+'],
    'code point': ['\\x{e9}', '\\x{100}'],
    '\\v': ['\\v'],
    octal: ['\\12'],
    'Unicode class': ['\\p{Kawi}'],
    collating: ['[[.a.]]', '[a[=b=]]'],
    '(?<name>': ['(?<n>a)'],
    'group name': ['(?P<1a>x)', `(?P<${'a'.repeat(33)}>x)`],
    '{,n}': ['a{,3}'],
    instructions: ['[ab]{1000}'],
  };
  for (const [reason, patterns] of Object.entries(refused)) {
    test(`refuses ${patterns.map((p) => JSON.stringify(p)).join(' ')}: ${reason}`, () => {
      for (const pattern of patterns) assert.ok(re2Problem(pattern)?.includes(reason), `${pattern}: ${re2Problem(pattern)}`);
    });
  }
  test('mayMatchComma reads the compiled program', () => {
    for (const yes of [',', 'a.b', '[^a]', '\\W', '[+-/]', '\\pP', '(?s).', 'a|\\x2c']) assert.equal(mayMatchComma(yes), true, yes);
    for (const no of ['abc', '[a-z]+', 'v[0-9]*', '\\w\\d', '(a|b)?', '']) assert.equal(mayMatchComma(no), false, no);
  });
});

describe('re2js loading', () => {
  test('the daemon loads re2js only when a pattern is first compiled', () => {
    const script = [
      "import { createRequire } from 'node:module';",
      "const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('re2js'));",
      "await import('./src/main.ts');",
      "const { re2Problem } = await import('./src/domain/regex.ts');",
      'const before = loaded();',
      "const problem = re2Problem('a(b');",
      'console.log(JSON.stringify({ before, after: loaded(), problem: problem !== undefined }));',
    ].join('\n');
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out.trim().split('\n').at(-1) ?? ''), { before: false, after: true, problem: true });
  });
});

describe('routeConditions renderings', () => {
  const cases: ReadonlyArray<readonly [RouteMatch, readonly string[]]> = [
    [none, ['']],
    [{ ...none, path: { kind: 'prefix', value: '/' } }, ['']],
    [{ ...none, path: { kind: 'exact', value: '/a' } }, ['{ path -m str /a }']],
    [{ ...none, path: { kind: 'prefix', value: "/it's #1" } }, [`{ path -m beg "/it's #1" }`]],
    [{ ...none, path: { kind: 'regex', value: '/a/.*' } }, ["{ path -m reg '^(?:/a/.*)\\z' }"]],
    [{ ...none, methods: ['GET', 'POST'] }, ['{ method GET POST }']],
    [hdr('x-a', { kind: 'present' }), ['{ req.fhdr_cnt(x-a) gt 0 }']],
    [hdr('x-a', { kind: 'present' }, true), ['{ req.fhdr_cnt(x-a) eq 0 }']],
    [hdr('x-a', { kind: 'exact', value: '1' }), ['{ req.fhdr_cnt(x-a) eq 1 } { req.fhdr(x-a) -m str 1 }']],
    [hdr('x-a', { kind: 'exact', value: '1' }, true), ['{ req.fhdr_cnt(x-a) gt 1 }', '{ req.fhdr_cnt(x-a) eq 1 } !{ req.fhdr(x-a) -m str 1 }']],
    [hdr('x-a', { kind: 'exact', value: 'a,b' }, true), ['{ req.fhdr_cnt(x-a) eq 1 } !{ req.fhdr(x-a) -m str a,b }']],
    [hdr('x-a', { kind: 'exact', value: '' }), ['{ req.fhdr_cnt(x-a) eq 1 } { req.fhdr(x-a) -m len 0 }']],
    [hdr('x-a', { kind: 'prefix', value: '-i' }), ['{ req.fhdr(x-a,1) -m beg -- -i }']],
    [hdr('x-a', { kind: 'suffix', value: 'z' }, true), ['{ req.fhdr_cnt(x-a) gt 0 } !{ req.fhdr(x-a,-1) -m end z }']],
    [hdr('x-a', { kind: 'prefix', value: '' }, true), []],
    [hdr('x-a', { kind: 'exact', value: '}' }), ["{ req.fhdr_cnt(x-a) eq 1 } { req.fhdr(x-a) -m reg '^\\}\\z' }"]],
    [hdr('x-a', { kind: 'regex', value: 'v[0-9]' }, true), ['{ req.fhdr_cnt(x-a) gt 1 }', "{ req.fhdr_cnt(x-a) eq 1 } !{ req.fhdr(x-a) -m reg '^(?:v[0-9])\\z' }"]],
    [hdr("x'y", { kind: 'present' }), [`{ "req.fhdr_cnt(\\"x'y\\")" gt 0 }`]],
    [qp('v', { kind: 'present' }), ["{ query -m reg '(?:^|&)v(?:=|&|\\z)' }"]],
    [qp('v', { kind: 'exact', value: '1' }), ["{ query -m reg '^(?:(?!v(?:=|&|\\z))[^&]*&)*v=1(?:&|\\z)' }"]],
    [qp('v', { kind: 'exact', value: 'a&b' }), []],
    [
      qp('v', { kind: 'regex', value: '[0-9]+' }),
      [`{ query -m reg '(?:^|&)v(?:=|&|\\z)' } { 'query,regsub("^(?:(?!v(?:=|&|\\\\z))[^&]*&)*v(?:=([^&]*))?(?:&.*)?\\\\z","\\\\1")' -m reg '^(?:[0-9]+)\\z' }`],
    ],
  ];
  for (const [match, expected] of cases) {
    test(JSON.stringify(match).replace(/"(methods|headers|queryParams)":\[\],?/g, ''), () => assert.deepEqual(routeConditions(match), expected));
  }
  const refusals: ReadonlyArray<readonly [RouteMatch, string]> = [
    [hdr(':authority', { kind: 'present' }), ':authority'],
    [hdr('x a', { kind: 'present' }), 'x a'],
    [hdr('x-a', { kind: 'exact', value: 'a\nb' }), 'a\nb'],
    [hdr('x-a', { kind: 'suffix', value: 'a\0' }), 'a\0'],
    [hdr('x-a', { kind: 'regex', value: '(?=a)' }), '(?=a)'],
    [hdr('x'.repeat(9000), { kind: 'present' }), 'x'.repeat(100)],
    [{ ...none, methods: ['GET', 'G.T'] }, 'G.T'],
    [{ ...none, path: { kind: 'regex', value: '/a\\1' } }, '/a\\1'],
    [qp('', { kind: 'present' }), '""'],
  ];
  for (const [match, shown] of refusals) {
    test(`refuses ${JSON.stringify(shown).slice(0, 40)} with MODEL_INVALID naming it`, () => {
      assert.throws(
        () => routeConditions(match),
        (err: unknown) => isHaproxyConnectError(err, 'MODEL_INVALID') && err.message.includes(shown.startsWith('"') ? shown : JSON.stringify(shown).slice(1, -1)),
      );
    });
  }
  test('approximations names the comma cases only', () => {
    assert.equal(approximations(hdr('x-a', { kind: 'exact', value: 'a,b' })).length, 1);
    assert.equal(approximations(hdr('x-a', { kind: 'regex', value: 'a.*' })).length, 1);
    assert.deepEqual(approximations(hdr('x-a', { kind: 'regex', value: '[a-z]+' })), []);
  });
  test('conditionWords counts quoted words once', () => assert.equal(conditionWords(`{ "a b\\" c" 'd e' f }`), 5));
});

// ---- Envoy's answer (L7.md §2.1) -------------------------------------------------------------
/** Envoy's answer, the answer routeConditions documents (they differ only where it approximates), and whether to skip. */
type Verdict = { envoy: boolean; rendered: boolean; skip: boolean };
const compiled = new Map<string, RE2JS>();
const fullMatch = (pattern: string, value: string) => (compiled.get(pattern) ?? compiled.set(pattern, RE2JS.compile(pattern)).get(pattern))?.matches(value) === true;
/** Envoy's parseParameters: split at '&' only, the first occurrence wins, `name` alone has value '' (the '' name is never matched here). */
function firstQueryValues(target: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const param of target.includes('?') ? target.slice(target.indexOf('?') + 1).split('&') : []) {
    const eq = param.includes('=') ? param.indexOf('=') : param.length;
    if (!params.has(param.slice(0, eq))) params.set(param.slice(0, eq), param.slice(eq + 1));
  }
  return params;
}
function headerVerdict(header: HeaderMatch, req: Req): Verdict {
  const values = req.headers.filter(([name]) => name.toLowerCase() === header.name.toLowerCase()).map(([, value]) => value.replace(/^[ \t]+|[ \t]+$/g, ''));
  const m = header.match;
  if (values.length === 0) return { envoy: header.invert && m.kind === 'present', rendered: header.invert && m.kind === 'present', skip: false };
  const joined = values.join(',');
  const matched =
    m.kind === 'present' || { exact: joined === m.value, prefix: joined.startsWith(m.value), suffix: joined.endsWith(m.value), regex: m.kind === 'regex' && fullMatch(m.value, joined) }[m.kind];
  const envoy = matched !== header.invert;
  const approximated = values.length > 1 && m.kind !== 'present' && (m.kind === 'regex' ? mayMatchComma(m.value) : m.value.includes(','));
  return { envoy, rendered: approximated ? false : envoy, skip: m.kind === 'regex' && values.some((v) => /[^\x00-\x7f]/.test(v)) };
}
function routeVerdict(match: RouteMatch, req: Req): Verdict {
  const path = req.target.split('?')[0] ?? '';
  const p = match.path;
  const pathOk = p === undefined || { exact: path === p.value, prefix: path.startsWith(p.value), regex: p.kind === 'regex' && fullMatch(p.value, path) }[p.kind];
  const query = firstQueryValues(req.target);
  const queryOk = match.queryParams.every(({ name, match: m }) => {
    const value = query.get(name);
    return value !== undefined && (m.kind === 'present' || (m.kind === 'exact' ? value === m.value : fullMatch(m.value, value)));
  });
  const base = pathOk && queryOk && (match.methods.length === 0 || match.methods.includes(req.method));
  const headers = match.headers.map((h) => headerVerdict(h, req));
  return { envoy: base && headers.every((h) => h.envoy), rendered: base && headers.every((h) => h.rendered), skip: headers.some((h) => h.skip) };
}

// ---- HAProxy harness -------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'hc-route-acl-'));
after(() => {
  stopAll();
  rmSync(dir, { recursive: true, force: true });
});

function configFor(port: number, routes: readonly AclTerm[][][]): string {
  const inline = (t: AclTerm) => `${t.negated ? '!' : ''}{ ${t.expression} }`;
  // A route that takes every request ends the list (HAProxy warns about rules after it).
  const last = routes.findIndex((alternatives) => alternatives.length === 1 && alternatives[0]?.length === 0);
  const acls: string[] = [];
  const rules = (last < 0 ? routes : routes.slice(0, last + 1)).flatMap((alternatives, i) => {
    const rule = `    http-request return status 200 content-type text/plain string m${i}`;
    // No `if` at all for it: a bare `if` is accepted by haproxy -c and never matches.
    if (i === last) return [rule];
    const conditions = alternatives.map((terms) => terms.map(inline).join(' '));
    const joined = `${rule} if ${conditions.join(' || ')}`;
    if (alternatives.length === 0) return [];
    if (conditionWords(joined) <= MAX_LINE_WORDS) return [joined];
    // Past HAProxy's 64 words: one rule per alternative, its terms as named ACLs.
    acls.push(...alternatives.flatMap((terms, j) => terms.map((t, k) => `    acl r${i}_${j}_${k} ${t.expression}`)));
    return alternatives.map((terms, j) => `${rule} if ${terms.map((t, k) => `${t.negated ? '!' : ''}r${i}_${j}_${k}`).join(' ')}`);
  });
  const head = ['global', '    nbthread 1', 'defaults', '    mode http', '    timeout connect 1s', '    timeout client 5s', '    timeout server 5s', 'frontend routes', `    bind 127.0.0.1:${port}`];
  const fallback = last < 0 ? ['    http-request return status 404 content-type text/plain string none'] : [];
  return [...head, ...acls, ...rules, ...fallback, ''].join('\n');
}

/** `haproxy -c` (no alert, no warning), `haproxy -db` (killed by its pid), every request sent; the mismatches. */
async function differential(matches: readonly RouteMatch[], reqs: readonly Req[], stats = { approximated: 0, skipped: 0, matched: 0 }): Promise<string[]> {
  const [port = 0] = await freePorts(1);
  const cfg = join(dir, `routes-${port}.cfg`);
  writeFileSync(cfg, configFor(port, matches.map(routeConditionTerms)));
  const haproxy = await serveChecked(cfg, port);
  try {
    const mismatches: string[] = [];
    const ask = async (req: Req) => {
      const verdicts = matches.map((m) => routeVerdict(m, req));
      const choice = (key: 'envoy' | 'rendered') => (verdicts.some((v) => v[key]) ? `m${verdicts.findIndex((v) => v[key])}` : 'none');
      const [envoy, expected] = [choice('envoy'), choice('rendered')];
      if (verdicts.some((v) => v.skip)) return void stats.skipped++;
      stats.approximated += envoy === expected ? 0 : 1;
      stats.matched += expected === 'none' ? 0 : 1;
      const response = await send(port, rawRequest(req));
      const got = /^HTTP\/1\.1 (200|404) /.test(response) ? response.slice(response.indexOf('\r\n\r\n') + 4) : response.split('\r\n')[0];
      const shown = (m = '') => (m.startsWith('m') ? `${m} ${JSON.stringify(matches[Number(m.slice(1))])}` : m);
      if (got !== expected) mismatches.push(`${JSON.stringify(rawRequest(req))}: HAProxy ${shown(got)}, expected ${shown(expected)} (Envoy ${envoy})`);
    };
    for (let i = 0; i < reqs.length; i += 16) await Promise.all(reqs.slice(i, i + 16).map(ask));
    return mismatches;
  } finally {
    haproxy.stop();
  }
}
const batchArb = fc
  .array(routeArb, { minLength: 1, maxLength: 16 })
  .chain((routes) => fc.tuple(fc.constant(routes), fc.array(fc.oneof(reqArb, ...routes.map(nearReq)), { minLength: 80, maxLength: 80 })));

async function checkProperty(arb: fc.Arbitrary<readonly [RouteMatch[], Req[]]>, numRuns: number, stats = { approximated: 0, skipped: 0, matched: 0 }): Promise<void> {
  let failed: string[] = [];
  const property = fc.asyncProperty(arb, async ([matches, reqs]) => {
    failed = await differential(matches, reqs, stats);
    return failed.length === 0;
  });
  const details = await fc.check(property, { seed: SEED, numRuns, endOnFailure: true });
  if (details.failed) {
    const cause = failed.length > 0 ? failed.slice(0, 10).join('\n') : String(details.errorInstance);
    throw new Error(`seed ${SEED} (ROUTE_ACL_SEED=${SEED} reproduces it), routes ${JSON.stringify(details.counterexample?.[0][0])}:\n${cause}`);
  }
}

describe('routeConditions against HAProxy', () => {
  test('fixed edges: absent headers with invert, joined values, first query occurrence, a prefix holding a query never matches', async () => {
    const admin: RouteMatch = { ...hdr('x-debug', { kind: 'exact', value: '1' }, true), path: { kind: 'prefix', value: '/admin' } };
    const matches: RouteMatch[] = [admin, { ...qp('v', { kind: 'exact', value: '2' }), methods: ['GET'] }, { ...none, path: { kind: 'prefix', value: '/a?x' } }, hdr('x-p', { kind: 'present' }, true)];
    const req = (method: string, target: string, ...lines: string[]): Req => ({ method, target, headers: lines.map((l) => [l.split(':')[0] ?? '', l.slice(l.indexOf(':') + 1)]) });
    const reqs = [req('GET', '/admin'), req('GET', '/admin', 'x-debug:1'), req('GET', '/admin/x', 'x-debug:1', 'x-debug:1'), req('GET', '/adminx', 'x-debug:2'), req('GET', '/a')];
    reqs.push(req('get', '/q?v=2', 'x-p:'), ...['/q?v=1&v=2', '/q?v&v=2', '/q?a=1&v=2', '/a?x=1'].map((target) => req('GET', target, 'x-p:')));
    assert.deepEqual(await differential(matches, reqs), []);
  });

  test('fast-check: HAProxy picks the route Envoy picks', async (t) => {
    const stats = { approximated: 0, skipped: 0, matched: 0 };
    await checkProperty(batchArb, 14, stats);
    t.diagnostic(`seed ${SEED}: ${stats.matched} of 1120 requests routed, ${stats.approximated} approximated, ${stats.skipped} skipped`);
    assert.ok(stats.skipped < 200, `skipped ${stats.skipped} of 1120 requests`);
  });

  test('fast-check: hostile strings in every field render to a config HAProxy accepts with their meaning, or MODEL_INVALID', async () => {
    const unit = fc.oneof(fc.constantFrom(...HOSTILE), fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }), fc.string({ unit: 'binary', maxLength: 1 }));
    const hostile = fc.string({ unit, maxLength: 12 });
    const anyValue = fc.oneof(fc.constant<ValueMatch>({ kind: 'present' }), fc.record({ kind: fc.constantFrom('exact', 'prefix', 'suffix', 'regex'), value: hostile }));
    const slash = hostile.map((v) => `/${v}`);
    const pathOf = fc.record({ kind: fc.constantFrom('exact' as const, 'prefix' as const, 'regex' as const), value: fc.oneof(hostile, slash) });
    const headerOf = fc.record({ name: fc.oneof(hostile, fc.constantFrom(...NAMES)), match: anyValue, invert: fc.boolean() });
    const queryMatch = fc.oneof(fc.constant({ kind: 'present' as const }), fc.record({ kind: fc.constantFrom('exact', 'regex'), value: hostile }));
    const queryOf = fc.record({ name: fc.oneof(hostile, fc.constantFrom(...QUERY_NAMES)), match: queryMatch });
    const route: fc.Arbitrary<RouteMatch> = fc
      .tuple(fc.option(pathOf), fc.array(fc.oneof(hostile, fc.constantFrom(...METHODS)), { maxLength: 1 }), fc.array(headerOf, { maxLength: 1 }), fc.array(queryOf, { maxLength: 1 }))
      .map(([path, methods, headers, queryParams]) => (path === null ? { methods, headers, queryParams } : { path, methods, headers, queryParams }));
    const accepted: RouteMatch[] = [];
    fc.assert(
      fc.property(route, (match) => {
        const refusal = expectedRefusal(match);
        try {
          routeConditions(match);
          assert.equal(refusal, undefined, `rendered although ${refusal}`);
          accepted.push(match);
        } catch (err) {
          assert.ok(isHaproxyConnectError(err, 'MODEL_INVALID'), String(err));
          assert.notEqual(refusal, undefined, `refused: ${err.message}`);
        }
      }),
      { seed: SEED, numRuns: 400 },
    );
    // The accepted ones, 40 per config, each asked with requests that carry its own values.
    const sendable = (s: string) => /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$/.test(s);
    for (let i = 0; i < accepted.length; i += 40) {
      const batch = accepted.slice(i, i + 40);
      const reqs = batch.flatMap((m): Req[] => {
        const h = m.headers[0];
        const q = m.queryParams[0];
        const path = m.path?.value.startsWith('/') && sendable(m.path.value) ? m.path.value : '/';
        const query = q !== undefined && sendable(q.name) && (q.match.kind === 'present' || sendable(q.match.value)) ? `${q.name}=${q.match.kind === 'present' ? '' : q.match.value}` : '';
        const value = h !== undefined && h.match.kind !== 'present' && !/[\0-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$/.test(h.match.value) ? h.match.value : 'x';
        const method = m.methods[0] ?? 'GET';
        const headers: Req['headers'] = h === undefined ? [] : [[h.name, value]];
        const target = query === '' || path.includes('?') ? path : `${path}?${query}`;
        return [
          { method, target, headers },
          { method, target: path, headers: [...headers, ...headers] },
        ];
      });
      assert.deepEqual(await differential(batch, reqs), [], `seed ${SEED} (ROUTE_ACL_SEED=${SEED} reproduces it)`);
    }
    // Very long values: HAProxy takes 100k-character patterns, its PCRE2 and argument buffer have limits.
    const long = 'a'.repeat(100_000);
    const longRoutes = [hdr('x-a', { kind: 'exact', value: long }), { ...none, path: { kind: 'exact', value: `/${long}` } } as const, qp('v'.repeat(4096), { kind: 'exact', value: 'b'.repeat(4096) })];
    const longReqs: Req[] = [{ method: 'GET', target: '/?b', headers: [['x-b', 'a'.repeat(990)]] }];
    assert.deepEqual(await differential([...longRoutes, hdr('x-b', { kind: 'regex', value: 'a{990}' })], longReqs), []);
    for (const refused of [hdr('x-a', { kind: 'regex', value: `${long}|1` }), qp('v'.repeat(4097), { kind: 'present' }), qp('v', { kind: 'exact', value: 'b'.repeat(4097) })]) {
      assert.throws(() => routeConditions(refused), /longer than|instructions/);
    }
  });
});

/** Characters with a meaning in haproxy.cfg, in HAProxy's argument parser, in ACL conditions, in PCRE2 or in RE2. */
const HOSTILE = [...' \t\n\r\0"\'\\#{}$()[],%&=?-!é😀\ud800', '-i', '--', '||', 'if', '$HOME', '\\1', '\\x{100}', '(?=', ')\\z', '\\Q'];

/** Why routeConditions must refuse `match` (an independent statement of its rules), or undefined. */
function expectedRefusal(match: RouteMatch): string | undefined {
  const valueIn = (m: { kind: string; value?: string } | undefined) => m?.value ?? '';
  const regexes = [match.path, ...match.headers.map((h) => h.match), ...match.queryParams.map((q) => q.match)].filter((m) => m?.kind === 'regex').map(valueIn);
  const strings = [valueIn(match.path), ...match.methods, ...match.headers.flatMap((h) => [h.name, valueIn(h.match)]), ...match.queryParams.flatMap((q) => [q.name, valueIn(q.match)])];
  if (strings.some((s) => s.includes('\0'))) return 'a NUL';
  if (strings.some((s) => /[\ud800-\udfff]/u.test(s))) return 'a lone surrogate';
  if (match.methods.some((m) => !/^[!#%&'_`~0-9A-Za-z-]+$/.test(m))) return 'a method';
  if (match.headers.some((h) => !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(h.name))) return 'a header name';
  if (match.headers.some((h) => h.match.kind !== 'present' && h.match.kind !== 'regex' && /[\r\n]/.test(h.match.value))) return 'a header value';
  if (match.queryParams.some((q) => q.name === '')) return 'an empty query name';
  if (regexes.some((r) => re2Problem(r) !== undefined)) return 'a regex';
  return undefined;
}
