/**
 * Differential test of the L7 intention decision (decideRequest, src/intentions/evaluate.ts) against
 * Consul v1.16.2's own RBAC generation evaluated as Envoy would (/work/shared/L7.md §3.1, §3.3).
 *
 * Seeded random `service-intentions` entries for destination `web` and for the wildcard destination
 * (exact and `*` sources, L4 allow/deny, L7 permissions with every 1.16.2 matcher ± Invert, methods,
 * deny permissions ahead of allow ones, regexes from a small grammar inside RE2 ∩ PCRE2), default
 * allow and default deny. One `go test` run of tools/consul/rbacoracle puts every entry set through
 * Consul's config-entry decoder, Normalize, Validate and intention match, then through a web sidecar
 * snapshot and xds.ResourceGenerator, and answers the intentions (Consul's JSON) and the public
 * listener's envoy.filters.http.rbac filter. For every set × caller × request (requests aimed at the
 * set's matchers' edges: prefix boundaries, trailing slashes, %2F, queries, repeated, absent and
 * empty headers, values with commas, lower-case methods):
 * - ours: the IntentionSet built from Consul's intentions by our client's own intentionFromJson
 *   (intentionPrecedence asserted equal to Consul's precedence), then
 *   decideRequest on the request as our model sees it (the path without its query);
 * - Envoy: test/helpers/envoy-rbac.ts on the generated filter, the raw target and the caller's SPIFFE
 *   ID in the snapshot's trust domain.
 * They must agree, except for the one accepted difference (L7.md finding 2 and "Decisions"): a
 * wildcard-destination intention `S → *` that Envoy applies next to a higher-precedence `* → web`,
 * where we follow Consul's check endpoint (the first match by precedence decides). That case is
 * recognised by finding2Envoy, which must also predict Envoy's answer exactly; it is counted apart
 * and pinned by a fixed case.
 *
 * L7_DIFF_SEED: a number, or `random` to draw one (the seed is printed on failure). Needs the Go
 * toolchain (`go` on PATH, as scripts/build-consul.sh): a missing toolchain fails the test.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { intentionFromJson } from '../../src/consul/permissions.js';
import { intentionJsonSchema } from '../../src/consul/schemas.js';
import type { Intention, IntentionSet, PermissionRequest, SourceIdentity } from '../../src/domain/intentions.js';
import { re2Problem } from '../../src/domain/regex.js';
import { decideRequest, evaluate, intentionPrecedence, permissionMatches } from '../../src/intentions/evaluate.js';
import { envoyRbacDecision, type HttpRbacConfig, type RbacRequest } from '../helpers/envoy-rbac.js';
import type { ChainHeaderMatch } from '../helpers/envoy-routes.js';
import { prng } from '../helpers/prng.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const ORACLE_MODULE = join(ROOT, 'tools/consul');
const DEFAULT_SEED = 20_261_203;
const SEED = (() => {
  const raw = process.env.L7_DIFF_SEED;
  if (raw === undefined || raw === '') return DEFAULT_SEED;
  if (raw === 'random') return Math.floor(Math.random() * 2 ** 32);
  const n = Number(raw);
  assert.ok(Number.isInteger(n) && n >= 0, `L7_DIFF_SEED must be a non-negative integer or "random", got ${JSON.stringify(raw)}`);
  return n;
})();
const GENERATED_SETS = 160;
const REQUESTS_PER_SET = 10;
/** Cold Go build cache on 2 cores: about 3 minutes (Consul's xds package and its dependencies). */
const ORACLE_TIMEOUT_MS = 20 * 60_000;

/** Sources intentions name; callers are the services that send requests. */
const SOURCE_POOL = ['api', 'db', 'cache', '*'];
const CALLERS = ['api', 'db', 'cache', 'web', 'other'];
const PERMISSION_PATHS = ['/', '/a', '/a/', '/ab', '/a/b', '/b', '/a%2Fb', '/A'];
const REQUEST_PATHS = ['/', '/a', '/a/', '/ab', '/abc', '/a/b', '/a/b/c', '/b', '/ba', '/a%2Fb', '/a%2fb', '/A', '//a', '/a1', '/1'];
const QUERIES = ['', '', '', '?x=1', '?', '?/a', '?a/b'];
const HEADER_NAMES = ['x-a', 'X-A', 'x-b'];
const HEADER_VALUES = ['v', 'v1', 'a', 'b', 'a,b', 'V', 'xv', 'v,', '1'];
const REQUEST_HEADER_VALUES = ['v', 'v1', 'a', 'b', 'a,b', '', 'V', 'xv', 'v,', 'b,a', '1', 'ab', 'a1'];
const PERMISSION_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'get', 'post'];
const REQUEST_METHODS = ['GET', 'GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS', 'get', 'post'];

type Rand = () => number;
const pick = <T>(rand: Rand, items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;

// ---------------------------------------------------------------------------------------------
// Consul's JSON (PUT /v1/config service-intentions entries)

/** A header matcher as Consul writes it, in permissions as in routes. */
type HeaderJson = ChainHeaderMatch;
interface HttpJson {
  PathExact?: string;
  PathPrefix?: string;
  PathRegex?: string;
  Header?: HeaderJson[];
  Methods?: string[];
}
interface PermissionJson {
  Action: 'allow' | 'deny';
  HTTP: HttpJson;
}
interface SourceJson {
  Name: string;
  Action?: 'allow' | 'deny';
  Permissions?: PermissionJson[];
}
interface EntryJson {
  Kind: 'service-intentions';
  Name: 'web' | '*';
  Sources: SourceJson[];
}

interface RawRequest {
  method: string;
  /** The request target as sent: path, then `?query` if any. */
  target: string;
  headers: Array<[string, string]>;
}

interface Case {
  label: string;
  defaultAllow: boolean;
  entries: EntryJson[];
  requests: RawRequest[];
}

interface OracleAnswer {
  error?: string;
  intentions?: unknown[];
  rbac?: HttpRbacConfig;
  trustDomain?: string;
}

// ---------------------------------------------------------------------------------------------
// Generator

/** A regex of the grammar below, with a way to draw strings it matches (requests aimed at it). */
interface Rx {
  source: string;
  sample: (rand: Rand) => string;
}

const samplers = new Map<string, Rx>();

/** A regex from a small grammar: ASCII atoms, classes, groups, alternation, quantifiers (RE2 ∩ PCRE2). */
function regex(rand: Rand, literals: string, depth = 0): Rx {
  const chars =
    (set: string): Rx['sample'] =>
    (r) =>
      pick(r, [...set]);
  const atom = (): Rx => {
    const r = rand();
    if (r < 0.45) {
      const c = pick(rand, [...literals]);
      return { source: c, sample: () => c };
    }
    if (r < 0.55) return { source: '.', sample: chars(literals) };
    if (r < 0.75) {
      const [source, set] = pick(rand, [
        ['[a-c]', 'abc'],
        ['[^/]', 'abv1,'],
        ['[^,]', 'abv1/'],
        ['[0-9]', '019'],
        ['\\d', '27'],
        ['[ab1]', 'ab1'],
      ] as const);
      return { source, sample: chars(set) };
    }
    if (depth < 1) {
      const inner = regex(rand, literals, depth + 1);
      return { source: `(?:${inner.source})`, sample: inner.sample };
    }
    const c = pick(rand, [...literals]);
    return { source: c, sample: () => c };
  };
  const piece = (): Rx => {
    const a = atom();
    const [q, min, max] = pick(rand, [
      ['', 1, 1],
      ['', 1, 1],
      ['', 1, 1],
      ['*', 0, 2],
      ['+', 1, 2],
      ['?', 0, 1],
      ['{1,2}', 1, 2],
    ] as const);
    return { source: a.source + q, sample: (r) => Array.from({ length: min + Math.floor(r() * (max - min + 1)) }, () => a.sample(r)).join('') };
  };
  const seq = (): Rx => {
    const pieces = Array.from({ length: 1 + Math.floor(rand() * 3) }, piece);
    return { source: pieces.map((p) => p.source).join(''), sample: (r) => pieces.map((p) => p.sample(r)).join('') };
  };
  if (rand() < 0.3) {
    const [a, b] = [seq(), seq()];
    return { source: `${a.source}|${b.source}`, sample: (r) => (r() < 0.5 ? a : b).sample(r) };
  }
  return seq();
}

/** Draws until re2Problem accepts: outside RE2 ∩ PCRE2 our parser refuses a pattern by design (the intention denies). */
function checkedRegex(make: () => Rx): string {
  for (;;) {
    const rx = make();
    if (re2Problem(rx.source) === undefined) {
      samplers.set(rx.source, rx);
      return rx.source;
    }
  }
}

function randomHeader(rand: Rand): HeaderJson {
  const h: HeaderJson = { Name: pick(rand, HEADER_NAMES) };
  switch (pick(rand, ['present', 'exact', 'prefix', 'suffix', 'regex'] as const)) {
    case 'present':
      h.Present = true;
      break;
    case 'exact':
      h.Exact = pick(rand, HEADER_VALUES);
      break;
    case 'prefix':
      h.Prefix = pick(rand, ['v', 'a', 'a,', 'x', 'V']);
      break;
    case 'suffix':
      h.Suffix = pick(rand, ['v', '1', ',b', 'b', 'a,b']);
      break;
    case 'regex':
      h.Regex = checkedRegex(() => regex(rand, 'abv1,'));
      break;
  }
  if (rand() < 0.35) h.Invert = true;
  return h;
}

function randomPermission(rand: Rand, action: 'allow' | 'deny'): PermissionJson {
  const http: HttpJson = {};
  switch (pick(rand, ['none', 'exact', 'prefix', 'prefix', 'regex'] as const)) {
    case 'exact':
      http.PathExact = pick(rand, PERMISSION_PATHS);
      break;
    case 'prefix':
      http.PathPrefix = pick(rand, PERMISSION_PATHS);
      break;
    case 'regex':
      http.PathRegex = checkedRegex(() => {
        if (rand() < 0.3) return regex(rand, 'ab/1');
        const rx = regex(rand, 'ab/1%F');
        return { source: `/(?:${rx.source})`, sample: (r) => `/${rx.sample(r)}` };
      });
      break;
    case 'none':
      break;
  }
  const headers = Array.from({ length: pick(rand, [0, 0, 1, 1, 2]) }, () => randomHeader(rand));
  if (headers.length > 0) http.Header = headers;
  if (rand() < 0.35) {
    const methods: string[] = [];
    for (let n = 1 + Math.floor(rand() * 3); n > 0; n--) {
      const m = pick(rand, PERMISSION_METHODS);
      // Consul upper-cases, then refuses duplicates.
      if (!methods.some((x) => x.toUpperCase() === m.toUpperCase())) methods.push(m);
    }
    http.Methods = methods;
  }
  if (Object.keys(http).length === 0) http.PathPrefix = pick(rand, PERMISSION_PATHS);
  return { Action: action, HTTP: http };
}

function randomL7(rand: Rand): PermissionJson[] {
  const n = 1 + Math.floor(rand() * 4);
  // Half the time 1..n deny permissions first, then allow ones (Consul subtracts the earlier ones).
  const denies = rand() < 0.5 ? 1 + Math.floor(rand() * n) : -1;
  return Array.from({ length: n }, (_, i) => randomPermission(rand, denies >= 0 ? (i < denies ? 'deny' : 'allow') : rand() < 0.5 ? 'allow' : 'deny'));
}

function randomEntries(rand: Rand): EntryJson[] {
  const web: SourceJson[] = [];
  for (const name of SOURCE_POOL) {
    if (rand() < 0.4) continue;
    web.push(rand() < 0.5 ? { Name: name, Permissions: randomL7(rand) } : { Name: name, Action: rand() < 0.5 ? 'allow' : 'deny' });
  }
  const star: SourceJson[] = [];
  for (const name of SOURCE_POOL) {
    if (rand() < 0.6) continue;
    star.push({ Name: name, Action: rand() < 0.5 ? 'allow' : 'deny' });
  }
  const entries: EntryJson[] = [];
  if (web.length > 0) entries.push({ Kind: 'service-intentions', Name: 'web', Sources: web });
  if (star.length > 0) entries.push({ Kind: 'service-intentions', Name: '*', Sources: star });
  return entries;
}

/** A value that a header matcher should (or, mutated, should not quite) match. */
function aimedHeaderValue(rand: Rand, h: HeaderJson): string {
  const near = rand() < 0.6;
  if (h.Exact !== undefined) return near ? h.Exact : pick(rand, [`${h.Exact}x`, h.Exact.slice(1), h.Exact.toUpperCase()]);
  if (h.Prefix !== undefined) return near ? `${h.Prefix}${pick(rand, ['', 'x', ',b'])}` : h.Prefix.slice(1);
  if (h.Suffix !== undefined) return near ? `${pick(rand, ['', 'a', 'v,'])}${h.Suffix}` : h.Suffix.slice(0, -1);
  const rx = h.Regex === undefined ? undefined : samplers.get(h.Regex);
  return near && rx !== undefined ? rx.sample(rand) : pick(rand, REQUEST_HEADER_VALUES);
}

function aimedPath(rand: Rand, http: HttpJson): string {
  const rx = http.PathRegex === undefined ? undefined : samplers.get(http.PathRegex);
  if (rx !== undefined && rand() < 0.6) {
    const path = rx.sample(rand);
    return path.startsWith('/') ? path : `/${path}`;
  }
  const base = http.PathExact ?? http.PathPrefix;
  if (base === undefined) return pick(rand, REQUEST_PATHS);
  const r = rand();
  if (r < 0.35) return base;
  if (r < 0.5) return `${base}${pick(rand, ['b', '/', 'x', '%2F'])}`;
  if (r < 0.65 && base.length > 1) return base.slice(0, -1);
  if (r < 0.8) return base.endsWith('/') ? base.slice(0, -1) || '/' : `${base}/`;
  return pick(rand, REQUEST_PATHS);
}

function randomRequest(rand: Rand, entries: readonly EntryJson[]): RawRequest {
  const permissions = entries.flatMap((e) => e.Sources.flatMap((s) => s.Permissions ?? []));
  const aimed = permissions.length > 0 && rand() < 0.7 ? pick(rand, permissions).HTTP : undefined;
  const headers: Array<[string, string]> = [];
  if (aimed !== undefined) {
    for (const h of aimed.Header ?? []) {
      const r = rand();
      if (r < 0.15) continue; // absent
      const value = aimedHeaderValue(rand, h);
      const name = rand() < 0.2 ? h.Name.toUpperCase() : h.Name.toLowerCase();
      if (r < 0.3 && value.includes(',')) {
        // The same value, sent as two lines.
        const [first, ...rest] = value.split(',');
        headers.push([name, first ?? ''], [name, rest.join(',')]);
      } else if (r < 0.4) {
        headers.push([name, value], [name, pick(rand, REQUEST_HEADER_VALUES)]);
      } else {
        headers.push([name, value]);
      }
    }
  }
  for (let n = pick(rand, [0, 0, 1, 2]); n > 0; n--) headers.push([pick(rand, ['x-a', 'x-b', 'X-B', 'x-c']), pick(rand, REQUEST_HEADER_VALUES)]);
  if (rand() < 0.3) headers.sort(() => rand() - 0.5);
  let method = pick(rand, REQUEST_METHODS);
  if (aimed?.Methods !== undefined && rand() < 0.7) {
    const m = pick(rand, aimed.Methods).toUpperCase();
    method = rand() < 0.15 ? m.toLowerCase() : m;
  }
  const path = aimed !== undefined ? aimedPath(rand, aimed) : pick(rand, REQUEST_PATHS);
  return { method, target: `${path}${pick(rand, QUERIES)}`, headers };
}

function generatedCases(seed: number): Case[] {
  const rand = prng(seed);
  const cases: Case[] = [];
  while (cases.length < GENERATED_SETS) {
    const entries = randomEntries(rand);
    const defaultAllow = cases.length % 2 === 0;
    const requests = Array.from({ length: REQUESTS_PER_SET }, () => randomRequest(rand, entries));
    cases.push({ label: `generated #${cases.length}`, defaultAllow, entries, requests });
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Fixed cases

const get = (target: string, headers: Array<[string, string]> = []): RawRequest => ({ method: 'GET', target, headers });
const req = (method: string, target: string): RawRequest => ({ method, target, headers: [] });

/** L7.md finding 2, both default policies: Envoy lets `api` through `api → *` under `* → web`. */
const FINDING2_CASES: Case[] = [
  {
    label: 'finding 2, default deny',
    defaultAllow: false,
    entries: [
      { Kind: 'service-intentions', Name: 'web', Sources: [{ Name: '*', Action: 'deny' }] },
      { Kind: 'service-intentions', Name: '*', Sources: [{ Name: 'api', Action: 'allow' }] },
    ],
    requests: [get('/'), get('/a?x=1')],
  },
  {
    label: 'finding 2, default allow',
    defaultAllow: true,
    entries: [
      { Kind: 'service-intentions', Name: 'web', Sources: [{ Name: '*', Action: 'allow' }] },
      { Kind: 'service-intentions', Name: '*', Sources: [{ Name: 'api', Action: 'deny' }] },
    ],
    requests: [get('/'), get('/a?x=1')],
  },
];

/**
 * The second known difference: Consul writes source names into Envoy's principal regex unescaped,
 * so `a.b → web` allow also lets `axb` through in Envoy (default deny); names are compared
 * exactly here, as /v1/connect/intentions/check does.
 */
const DOTTED_CASE: Case = {
  label: 'a dotted source name, default deny',
  defaultAllow: false,
  entries: [{ Kind: 'service-intentions', Name: 'web', Sources: [{ Name: 'a.b', Action: 'allow' }] }],
  requests: [get('/')],
};

/** Examples of Consul's service-intentions documentation (destination renamed to web), default deny. */
const DOC_CASES: Array<Case & { expect: Array<[caller: string, request: number, allowed: boolean]> }> = [
  {
    label: 'docs: REST access',
    defaultAllow: false,
    entries: [
      {
        Kind: 'service-intentions',
        Name: 'web',
        Sources: [
          { Name: 'admin-dashboard', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/v2', Methods: ['GET', 'PUT', 'POST', 'DELETE', 'HEAD'] } }] },
          { Name: 'report-generator', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/v2/widgets', Methods: ['GET'] } }] },
        ],
      },
    ],
    requests: [get('/v2/widgets/1'), req('PATCH', '/v2/widgets/1'), get('/v1/widgets'), req('POST', '/v2/widgets'), get('/v2/gadgets')],
    expect: [
      ['admin-dashboard', 0, true],
      ['admin-dashboard', 1, false],
      ['admin-dashboard', 2, false],
      ['admin-dashboard', 3, true],
      ['admin-dashboard', 4, true],
      ['report-generator', 0, true],
      ['report-generator', 3, false],
      ['report-generator', 4, false],
      ['other', 0, false],
    ],
  },
  {
    label: 'docs: gRPC',
    defaultAllow: false,
    entries: [
      {
        Kind: 'service-intentions',
        Name: 'web',
        Sources: [
          {
            Name: 'frontend-web',
            Permissions: [
              { Action: 'deny', HTTP: { PathExact: '/mycompany.BillingService/IssueRefund' } },
              { Action: 'allow', HTTP: { PathPrefix: '/mycompany.BillingService/' } },
            ],
          },
          { Name: 'support-portal', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/mycompany.BillingService/' } }] },
        ],
      },
    ],
    requests: [req('POST', '/mycompany.BillingService/IssueRefund'), req('POST', '/mycompany.BillingService/GetBill'), req('POST', '/mycompany.OtherService/Get')],
    expect: [
      ['frontend-web', 0, false],
      ['frontend-web', 1, true],
      ['frontend-web', 2, false],
      ['support-portal', 0, true],
      ['support-portal', 1, true],
      ['support-portal', 2, false],
    ],
  },
  {
    label: 'docs: L4 and L7',
    defaultAllow: false,
    entries: [
      {
        Kind: 'service-intentions',
        Name: 'web',
        Sources: [
          { Name: 'hackathon-project', Action: 'deny' },
          { Name: 'web', Action: 'allow' },
          { Name: 'nightly-reconciler', Permissions: [{ Action: 'allow', HTTP: { PathExact: '/v1/reconcile-data', Methods: ['POST'] } }] },
        ],
      },
    ],
    requests: [req('POST', '/v1/reconcile-data'), get('/v1/reconcile-data'), req('POST', '/v1/reconcile-data/x'), get('/anything')],
    expect: [
      ['hackathon-project', 3, false],
      ['web', 3, true],
      ['web', 1, true],
      ['nightly-reconciler', 0, true],
      ['nightly-reconciler', 1, false],
      ['nightly-reconciler', 2, false],
    ],
  },
];

// ---------------------------------------------------------------------------------------------
// The oracle

/** One `go test` of tools/consul/rbacoracle for all cases (compiling Consul's xds package once). */
async function runOracle(cases: readonly Case[]): Promise<OracleAnswer[]> {
  const dir = mkdtempSync(join(tmpdir(), 'rbac-oracle-'));
  try {
    const input = join(dir, 'in.json');
    const output = join(dir, 'out.json');
    writeFileSync(input, JSON.stringify({ cases: cases.map((c) => ({ defaultAllow: c.defaultAllow, entries: c.entries })) }));
    // As scripts/lib/go-tool.sh: go.sum pins every module, the checksum database is not reachable.
    // -trimpath shares the compiled packages with scripts/build-consul.sh's build of the same module;
    // -vet=off spares go test's vet pass, which would analyse all ~1,500 dependencies (2 CPU-minutes
    // on a cache warmed by that build); -count=1: never a cached result, the output file is the point.
    const args = ['test', '-trimpath', '-vet=off', '-count=1', '-run', '^TestOracle$', './rbacoracle'];
    const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn('go', args, {
        cwd: ORACLE_MODULE,
        env: { ...process.env, GOSUMDB: 'off', GOFLAGS: '-mod=readonly', RBAC_ORACLE_IN: input, RBAC_ORACLE_OUT: output },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        text += d.toString();
      });
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' ? new Error('the Go toolchain (go) is required for the RBAC oracle (tools/consul/rbacoracle), as for scripts/build-consul.sh; it is not on PATH') : err),
      );
      child.on('close', (c) => resolve({ code: c, out: text }));
    });
    assert.equal(code, 0, `go ${args.join(' ')} (in tools/consul) failed:\n${out}`);
    const answers = (JSON.parse(readFileSync(output, 'utf8')) as { answers: OracleAnswer[] }).answers;
    assert.equal(answers.length, cases.length);
    return answers;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The two subjects

/** Our IntentionSet from Consul's intentions, as ConsulHttpClient.intentionsMatch builds it. */
function ourSet(answer: OracleAnswer, defaultAllow: boolean, context: string): IntentionSet {
  const intentions = (answer.intentions ?? []).map((raw): Intention => {
    const intention = intentionFromJson(intentionJsonSchema.parse(raw));
    assert.equal(intention.unenforceable, undefined, `${context}: our parser refused ${JSON.stringify(raw)}`);
    assert.equal(intentionPrecedence(intention), intention.precedence, `${context}: intentionPrecedence disagrees with Consul for ${intention.sourceName} -> ${intention.destinationName}`);
    return intention;
  });
  return { intentions, defaultAllow };
}

const caller = (service: string): SourceIdentity => ({ service, namespace: 'default', partition: 'default' });

/** Our request model: the path without its query (HAProxy's `path`; Envoy's url_path strips the same). */
function permissionRequest(r: RawRequest): PermissionRequest {
  const q = r.target.indexOf('?');
  return { method: r.method, path: q < 0 ? r.target : r.target.slice(0, q), headers: r.headers.map(([n, v]) => [n.toLowerCase(), v] as const) };
}

function envoyRequest(trustDomain: string, service: string, r: RawRequest): RbacRequest {
  return { principal: `spiffe://${trustDomain}/ns/default/dc/dc1/svc/${service}`, method: r.method, path: r.target, headers: r.headers };
}

/**
 * L7.md finding 2: the source's best intention is `* → web` while an `S → *` (exact source,
 * wildcard destination, lower precedence) also names it. rbac.go only subtracts MORE specific
 * sources, so Envoy applies both, OR-ed in its allow-list (default deny) or deny-list (default
 * allow). Returns what Envoy must then answer, or undefined when the finding does not apply.
 */
function finding2Envoy(set: IntentionSet, service: string, ours: boolean): boolean | undefined {
  const best = evaluate(caller(service), set.intentions, set.defaultAllow).intention;
  if (best === undefined || best.sourceName !== '*' || best.destinationName !== 'web') return undefined;
  const wide = set.intentions.find((i) => i.destinationName === '*' && i.sourceName === service);
  if (wide === undefined) return undefined;
  return set.defaultAllow ? ours && wide.action !== 'deny' : ours || wide.action === 'allow';
}

/** How our decision was taken, for the coverage assertions. */
function route(set: IntentionSet, service: string, request: PermissionRequest): string {
  const d = evaluate(caller(service), set.intentions, set.defaultAllow);
  if (d.l7 !== undefined) {
    const first = d.l7.permissions.find((p) => permissionMatches(p.http, request));
    return first === undefined ? `l7 default ${set.defaultAllow ? 'allow' : 'deny'}` : `l7 ${first.action}`;
  }
  if (d.intention !== undefined) return `l4 ${d.intention.action}`;
  return `default ${set.defaultAllow ? 'allow' : 'deny'}`;
}

function dump(c: Case, answer: OracleAnswer, service: string, r: RawRequest, ours: boolean, envoy: boolean, matched: string[]): string {
  return [
    `seed ${SEED} (L7_DIFF_SEED=${SEED}), ${c.label}, default ${c.defaultAllow ? 'allow' : 'deny'}`,
    `  entries: ${JSON.stringify(c.entries)}`,
    `  Consul's intentions: ${JSON.stringify(answer.intentions ?? [])}`,
    `  source: ${service}`,
    `  request: ${r.method} ${r.target} ${JSON.stringify(r.headers)}`,
    `  ours: ${ours ? 'allow' : 'deny'}; Envoy: ${envoy ? 'allow' : 'deny'} (matched policies: ${matched.join(', ') || 'none'})`,
    `  RBAC: ${JSON.stringify(answer.rbac)}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------

describe('envoy-rbac evaluator: hand-written filters', () => {
  const td = 'td.consul';
  const principal = (svc: string): Record<string, unknown> => ({ authenticated: { principal_name: { safe_regex: { google_re2: {}, regex: `^spiffe://td.consul/ns/default/dc/[^/]+/svc/${svc}$` } } } });
  const policy = (permission: Record<string, unknown>, svc = 'api'): HttpRbacConfig => ({ rules: { policies: { p: { permissions: [permission], principals: [principal(svc)] } } } });
  const ask = (config: HttpRbacConfig, r: RawRequest, svc = 'api'): boolean => envoyRbacDecision(config, envoyRequest(td, svc, r)).allowed;
  const header = (h: Record<string, unknown>): Record<string, unknown> => ({ header: h });

  test('policies, actions and principals', () => {
    assert.equal(ask({}, get('/')), true, 'no rules: nothing enforced');
    assert.equal(ask({ rules: {} }, get('/')), false, 'ALLOW without policies denies');
    assert.equal(ask({ rules: { action: 'DENY' } }, get('/')), true, 'DENY without policies allows');
    assert.equal(ask(policy({ any: true }), get('/')), true);
    assert.equal(ask(policy({ any: true }), get('/'), 'apix'), false, 'the principal regex is a full match');
    assert.equal(ask({ rules: { action: 'DENY', policies: policy({ any: true }).rules?.policies ?? {} } }, get('/')), false);
    const notDb = { rules: { policies: { p: { permissions: [{ any: true }], principals: [{ and_ids: { ids: [principal('[^/]+'), { not_id: principal('db') }] } }] } } } };
    assert.equal(ask(notDb, get('/'), 'web'), true);
    assert.equal(ask(notDb, get('/'), 'db'), false);
  });

  test('url_path: without the query, raw, prefix edges', () => {
    const prefix = policy({ url_path: { path: { prefix: '/a' } } });
    assert.equal(ask(prefix, get('/ab')), true, 'a prefix is not a path segment');
    assert.equal(ask(prefix, get('/b?/a')), false, 'the query is not part of the path');
    assert.equal(ask(policy({ url_path: { path: { exact: '/a' } } }), get('/a?x=1')), true);
    assert.equal(ask(policy({ url_path: { path: { exact: '/a/b' } } }), get('/a%2Fb')), false, 'no %-decoding');
    assert.equal(ask(policy({ url_path: { path: { safe_regex: { google_re2: {}, regex: '/a.*' } } } }), get('/ab/c')), true);
    assert.equal(ask(policy({ url_path: { path: { safe_regex: { google_re2: {}, regex: '/a' } } } }), get('/ab')), false, 'a full match');
  });

  test('headers: joined occurrences, absent, invert, name case', () => {
    const exactAB = policy(header({ name: 'X-A', exact_match: 'a,b' }));
    assert.equal(ask(exactAB, get('/', [['x-a', 'a,b']])), true);
    assert.equal(
      ask(
        exactAB,
        get('/', [
          ['x-a', 'a'],
          ['X-A', 'b'],
        ]),
      ),
      true,
      'two lines are read as "a,b"',
    );
    assert.equal(ask(exactAB, get('/', [['x-a', 'a']])), false);
    const invertedExact = policy(header({ name: 'x-a', exact_match: 'v', invert_match: true }));
    assert.equal(ask(invertedExact, get('/')), false, 'an absent header never matches, inverted or not');
    assert.equal(ask(invertedExact, get('/', [['x-a', 'w']])), true);
    assert.equal(ask(invertedExact, get('/', [['x-a', 'v']])), false);
    assert.equal(ask(policy(header({ name: 'x-a', present_match: true, invert_match: true })), get('/')), true, 'an inverted present matches an absent header');
    assert.equal(ask(policy(header({ name: 'x-a', present_match: true })), get('/', [['x-a', '']])), true, 'an empty value is present');
    assert.equal(
      ask(
        policy(header({ name: 'x-a', suffix_match: 'b' })),
        get('/', [
          ['x-a', 'b'],
          ['x-a', 'a'],
        ]),
      ),
      false,
      'the joined value is "b,a"',
    );
    assert.equal(
      ask(
        policy(header({ name: 'x-a', safe_regex_match: { google_re2: {}, regex: '[^,]*' } })),
        get('/', [
          ['x-a', 'a'],
          ['x-a', 'b'],
        ]),
      ),
      false,
    );
  });

  test(':method: the regex Consul joins, case-sensitive', () => {
    const methods = policy(header({ name: ':method', safe_regex_match: { google_re2: {}, regex: 'GET|POST' } }));
    assert.equal(ask(methods, req('POST', '/')), true);
    assert.equal(ask(methods, req('get', '/')), false);
    assert.equal(ask(methods, req('GETX', '/')), false);
  });
});

describe(`L7 intentions: decideRequest agrees with Consul 1.16.2's RBAC as Envoy evaluates it (seed ${SEED})`, () => {
  const generated = generatedCases(SEED);
  const cases: Case[] = [...FINDING2_CASES, DOTTED_CASE, ...DOC_CASES, ...generated];
  let answers: OracleAnswer[] = [];
  let oracleMs = 0;

  // A test, not a hook: without Go (or with a broken oracle) this fails loudly, never skips.
  test(`oracle: Consul 1.16.2 generates the RBAC filter of ${cases.length} intention sets (one go test)`, { timeout: ORACLE_TIMEOUT_MS }, async (t) => {
    const started = Date.now();
    answers = await runOracle(cases);
    oracleMs = Date.now() - started;
    t.diagnostic(`go test (compile, link and ${cases.length} snapshots): ${(oracleMs / 1000).toFixed(1)} s`);
  });

  const at = (c: Case): OracleAnswer => {
    const answer = answers[cases.indexOf(c)];
    assert.ok(answer !== undefined, 'no oracle answer: the oracle test above failed');
    assert.equal(answer.error, undefined, `seed ${SEED}, ${c.label}: Consul refused ${JSON.stringify(c.entries)}`);
    assert.ok(answer.rbac !== undefined && answer.trustDomain !== undefined);
    return answer;
  };

  test('finding 2 (fixed): a wildcard-destination intention Envoy applies under a more general, higher-precedence one', () => {
    for (const c of FINDING2_CASES) {
      const answer = at(c);
      const set = ourSet(answer, c.defaultAllow, `seed ${SEED}, ${c.label}`);
      for (const r of c.requests) {
        const ours = decideRequest(caller('api'), permissionRequest(r), set);
        const envoy = envoyRbacDecision(answer.rbac as HttpRbacConfig, envoyRequest(answer.trustDomain as string, 'api', r)).allowed;
        // We follow /v1/connect/intentions/check: `* → web` (precedence 8) decides for api.
        assert.equal(ours, c.defaultAllow, `${c.label}: ours`);
        assert.equal(envoy, !c.defaultAllow, `${c.label}: Envoy follows api → * (precedence 6)`);
        assert.equal(finding2Envoy(set, 'api', ours), envoy, `${c.label}: the predicate recognises it`);
        // Everyone else: both follow `* → web`.
        for (const other of ['db', 'other']) {
          const o = decideRequest(caller(other), permissionRequest(r), set);
          assert.equal(o, c.defaultAllow);
          assert.equal(envoyRbacDecision(answer.rbac as HttpRbacConfig, envoyRequest(answer.trustDomain as string, other, r)).allowed, o);
          assert.equal(finding2Envoy(set, other, o), undefined);
        }
      }
    }
  });

  test('a dotted source name (fixed): Envoy reads the dot as any character, we compare names exactly', () => {
    const answer = at(DOTTED_CASE);
    const set = ourSet(answer, false, DOTTED_CASE.label);
    const r = DOTTED_CASE.requests[0] as RawRequest;
    const envoy = (service: string) => envoyRbacDecision(answer.rbac as HttpRbacConfig, envoyRequest(answer.trustDomain as string, service, r)).allowed;
    assert.equal(decideRequest(caller('a.b'), permissionRequest(r), set), true);
    assert.equal(envoy('a.b'), true);
    assert.equal(decideRequest(caller('axb'), permissionRequest(r), set), false);
    assert.equal(envoy('axb'), true, 'Envoy: the unescaped dot matches x');
    assert.equal(envoy('ab'), false);
  });

  test("Consul's documentation examples, on both sides", () => {
    for (const c of DOC_CASES) {
      const answer = at(c);
      const set = ourSet(answer, c.defaultAllow, `seed ${SEED}, ${c.label}`);
      for (const [service, index, allowed] of c.expect) {
        const r = c.requests[index] as RawRequest;
        const envoy = envoyRbacDecision(answer.rbac as HttpRbacConfig, envoyRequest(answer.trustDomain as string, service, r));
        assert.equal(envoy.allowed, allowed, `${c.label}: Envoy, ${service} ${r.method} ${r.target}: ${JSON.stringify(answer.rbac)}`);
        assert.equal(decideRequest(caller(service), permissionRequest(r), set), allowed, `${c.label}: ours, ${service} ${r.method} ${r.target}`);
      }
    }
  });

  test('generated intention sets: every decision agrees, finding 2 apart', (t) => {
    const coverage = new Map<string, number>();
    const count = (key: string): void => {
      coverage.set(key, (coverage.get(key) ?? 0) + 1);
    };
    let comparisons = 0;
    let finding2 = 0;
    let finding2Agreeing = 0;
    const finding2Examples: string[] = [];
    let mismatches = 0;
    const mismatchExamples: string[] = [];
    for (const c of generated) {
      const answer = at(c);
      const set = ourSet(answer, c.defaultAllow, `seed ${SEED}, ${c.label}`);
      const rbac = answer.rbac as HttpRbacConfig;
      for (const service of CALLERS) {
        for (const r of c.requests) {
          const request = permissionRequest(r);
          const ours = decideRequest(caller(service), request, set);
          const envoy = envoyRbacDecision(rbac, envoyRequest(answer.trustDomain as string, service, r), (kind, inverted, result) => count(`matcher ${kind}${inverted ? ' inverted' : ''} ${result}`));
          comparisons++;
          count(`ours ${ours ? 'allow' : 'deny'}`);
          count(`envoy ${envoy.allowed ? 'allow' : 'deny'}`);
          count(`route ${route(set, service, request)}`);
          count(`default ${c.defaultAllow ? 'allow' : 'deny'}`);
          const expected = finding2Envoy(set, service, ours);
          if (expected !== undefined) {
            if (envoy.allowed !== ours && envoy.allowed === expected) {
              finding2++;
              if (finding2Examples.length < 1) finding2Examples.push(dump(c, answer, service, r, ours, envoy.allowed, envoy.matched));
              continue;
            }
            if (envoy.allowed === ours) finding2Agreeing++;
          }
          if (envoy.allowed !== ours) {
            mismatches++;
            if (mismatchExamples.length < 5) mismatchExamples.push(dump(c, answer, service, r, ours, envoy.allowed, envoy.matched));
          }
        }
      }
    }
    t.diagnostic(
      `seed ${SEED}: ${comparisons} comparisons over ${generated.length} intention sets (oracle: one go test, ${(oracleMs / 1000).toFixed(1)} s); ` +
        `finding 2 (accepted, Envoy differs): ${finding2}, finding 2 shape with equal answers: ${finding2Agreeing}; other mismatches: ${mismatches}`,
    );
    t.diagnostic(
      [...coverage.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}: ${v}`)
        .join('; '),
    );
    for (const example of finding2Examples) t.diagnostic(`finding 2 example:\n${example}`);
    assert.equal(mismatches, 0, `${mismatches} decision(s) differ from Envoy's (the first ones below; seed ${SEED}):\n${mismatchExamples.join('\n\n')}`);

    // A test that cannot fail is a defect: the generator must reach every matcher, both ways.
    assert.ok(comparisons >= 2_000, `only ${comparisons} comparisons`);
    assert.ok(finding2 > 0, `seed ${SEED}: the generator never produced finding 2`);
    const need = (key: string, min = 1): void => assert.ok((coverage.get(key) ?? 0) >= min, `seed ${SEED}: never exercised: ${key}`);
    for (const outcome of ['allow', 'deny']) {
      need(`ours ${outcome}`, 100);
      need(`envoy ${outcome}`, 100);
      need(`default ${outcome}`);
      need(`route l4 ${outcome}`);
      need(`route l7 ${outcome}`);
      need(`route default ${outcome}`);
      need(`route l7 default ${outcome}`);
    }
    for (const result of ['true', 'false']) {
      for (const kind of ['url_path.exact', 'url_path.prefix', 'url_path.safe_regex', 'method.safe_regex_match', 'principal.safe_regex']) need(`matcher ${kind} ${result}`);
      for (const kind of ['exact_match', 'prefix_match', 'suffix_match', 'safe_regex_match']) {
        need(`matcher header.${kind} ${result}`);
        need(`matcher header.${kind} inverted ${result}`);
        // An absent header matches nothing but an inverted present_match.
        if (result === 'false') need(`matcher header.${kind}.absent ${result}`);
        if (result === 'false') need(`matcher header.${kind}.absent inverted ${result}`);
      }
    }
    // present_match on a present header is true, inverted false; on an absent one the reverse.
    need('matcher header.present_match true');
    need('matcher header.present_match inverted false');
    need('matcher header.present_match.absent false');
    need('matcher header.present_match.absent inverted true');
  });
});
