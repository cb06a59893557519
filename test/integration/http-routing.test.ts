/**
 * HTTP routing (Consul service-router and service-splitter config entries), with a real Consul
 * dev agent and real HAProxy: web's sidecar has `api` as an upstream; every service is HTTP through
 * service-defaults. `api` has two instances (api-v1 with Meta version=v1, api-v2 with version=v2,
 * the resolver's subsets v1 and v2), `api-admin` one. Every app is a reporting app
 * (devtools/apps.ts startReportingHttpApp): it answers JSON naming itself and the request as it
 * arrived (method, raw path with query, every header line), so a test sees which route took a
 * request, what it rewrote, and which headers it changed.
 *
 * What web's sidecar must do is what Envoy does with the same entries in Consul 1.16.2
 * (/work/shared/L7.md §2.1-2.3):
 * - matching: PathExact (path without query), PathPrefix (on the path without its query, as Envoy since 1.13.1), PathRegex
 *   (RE2 full match, path without query), Methods (case-sensitive), headers (values of a repeated
 *   header joined with ','; Invert only when the header is there), query parameters (first
 *   occurrence, raw, value-less names present), all on the raw %-encoded request;
 * - the catch-all route Consul appends takes the rest, to service `api` (either instance);
 * - PrefixRewrite (`/admin` → `/` gives `//users`), with `x-envoy-original-path`;
 * - split weights (statistically), a weight change without a reload and without failed requests;
 * - retries only with a retry policy, NumRetries default 1, status codes and connect failures;
 * - RequestTimeout per route, 15 s by default;
 * - request and response header operations, split level first and route level last (it wins);
 * - a route change: one reload naming the upstream, no failed request under traffic;
 * - a regex RE2 refuses: the sidecar keeps the last good routes and logs the refusal.
 *
 * Each router is written with a probe route `/__probe/<n>` → api-admin first; a router has been
 * applied once that probe is answered by api-admin while `/__probe/none`, which no route takes,
 * still reaches the catch-all (a broken route that takes everything cannot fake the switch).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { type HttpReport, type ReportingHttpApp, type RunningApp, startReportingHttpApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService, registerMeshServiceWithMeta } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { lastChangeLive, msSince, note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { Traffic } from '../../devtools/traffic.js';
import { explainedBy, type MeshInstance, VERSION_SUBSETS } from '../../devtools/explained.js';

/** How long a config entry may take to show in web's routing. */
const APPLY_TIMEOUT_MS = 30_000;
/** Requests of each split measurement, and the bound on the v2 count in standard deviations of the binomial. */
const SPLIT_REQUESTS = 1_200;
const SPLIT_SIGMAS = 5;
/** Router writes of the apply-time measurement. */
const ROUTER_WRITES = 10;
/** Envoy's route timeout when a route sets none (L7.md §2.2), and the route timeout of the short case. */
const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
const ROUTE_TIMEOUT_MS = 1_000;
/** How far from a timeout a 504 may come (HAProxy's timers tick at millisecond resolution; the hops add a little). */
const TIMEOUT_EARLY_MS = 100;
const TIMEOUT_LATE_MS = 800;

const CATCH_ALL = ['api-v1', 'api-v2'];

type Instance = MeshInstance;
const INSTANCES: readonly Instance[] = [
  { id: 'api-v1', name: 'api', key: 'apiV1', meta: { version: 'v1' } },
  { id: 'api-v2', name: 'api', key: 'apiV2', meta: { version: 'v2' } },
  { id: 'api-admin', name: 'api-admin', key: 'admin', meta: {} },
];

type Json = Record<string, unknown>;

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
const app = (id: string): ReportingHttpApp => apps.get(id) as ReportingHttpApp;
const web = (): SidecarProcess => sidecars.get('web') as SidecarProcess;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: exact request line and header lines (a lower-case method, a header sent
// twice, an empty value), one request per connection, the response's header lines kept apart.

interface Request {
  method?: string;
  /** The request target, sent as is. */
  path: string;
  headers?: ReadonlyArray<readonly [string, string]>;
  timeoutMs?: number;
}

interface Answer {
  /** 0 when no response came (the reason is in `body`). */
  status: number;
  /** Response header name (lower case) → values, one per header line. */
  headers: Record<string, string[]>;
  body: string;
  /** The app's report, when the body is one. */
  report: (HttpReport & { error?: string }) | undefined;
  ms: number;
}

function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < body.length) {
    const eol = body.indexOf('\r\n', at);
    if (eol < 0) break;
    const size = Number.parseInt(body.subarray(at, eol).toString(), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(body.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

function parseResponse(raw: Buffer, ms: number): Answer {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: `error: incomplete response '${raw.toString().slice(0, 200)}'`, report: undefined, ms };
  const [statusLine = '', ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    headers[name] = [...(headers[name] ?? []), line.slice(colon + 1).trim()];
  }
  let body = raw.subarray(end + 4);
  if (headers['transfer-encoding']?.some((v) => /chunked/i.test(v))) body = dechunk(body);
  else if (headers['content-length'] !== undefined) body = body.subarray(0, Number(headers['content-length'][0]));
  const text = body.toString();
  let report: Answer['report'];
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null && typeof (parsed as Json).id === 'string') report = parsed as Answer['report'];
  } catch {
    report = undefined;
  }
  return { status: Number(statusLine.split(' ')[1] ?? 0), headers, body: text, report, ms };
}

/** Sends one request through web's api upstream on a new connection. */
function send(req: Request): Promise<Answer> {
  const startedAt = performance.now();
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
    const timer = setTimeout(() => done({ status: 0, headers: {}, body: `error: no response within ${req.timeoutMs ?? 5_000} ms`, report: undefined, ms: msSince(startedAt) }), req.timeoutMs ?? 5_000);
    socket.on('connect', () => {
      const lines = [`${req.method ?? 'GET'} ${req.path} HTTP/1.1`, 'host: api', ...(req.headers ?? []).map(([k, v]) => `${k}: ${v}`), 'connection: close', '', ''];
      socket.write(lines.join('\r\n'));
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', (err) => done({ status: 0, headers: {}, body: `error: ${err.message}`, report: undefined, ms: msSince(startedAt) }));
    socket.on('close', () => done(parseResponse(Buffer.concat(chunks), msSince(startedAt))));
  });
}

const get = (path: string, headers: ReadonlyArray<readonly [string, string]> = []): Promise<Answer> => send({ path, headers });

/** Who answered, for messages: the app's id, or the status and the start of the body. */
const who = (a: Answer): string => (a.report !== undefined ? `${a.report.id} ${a.status}` : `status ${a.status}: ${a.body.slice(0, 120).replace(/\s+/g, ' ')}`);

// ---------------------------------------------------------------------------------------------
// Config entries, and waiting for web's sidecar to apply them.

async function deleteConfig(kind: string, name: string): Promise<void> {
  const res = await agent.fetch(`/v1/config/${kind}/${name}`, { method: 'DELETE' });
  if (!res.ok) throw new Error(`DELETE ${kind}/${name} failed: ${res.status} ${await res.text()}`);
}

/** What Consul compiled for api: start node, routes, splits (for failure messages and notes). */
async function compiledChain(): Promise<string> {
  try {
    const { Chain } = await agent.get<{ Chain: { StartNode: string; Protocol: string; Nodes: Record<string, Json> } }>('/v1/discovery-chain/api');
    const out = [`start ${Chain.StartNode}, protocol ${Chain.Protocol}`];
    for (const [key, node] of Object.entries(Chain.Nodes)) {
      if (node.Type === 'router') {
        for (const r of node.Routes as Array<{ Definition: { Match?: Json; Destination?: Json }; NextNode: string }>) {
          out.push(`  route ${JSON.stringify(r.Definition.Match?.HTTP ?? {})} -> ${JSON.stringify(r.Definition.Destination ?? {})} => ${r.NextNode}`);
        }
      } else if (node.Type === 'splitter') {
        out.push(`  ${key}: ${JSON.stringify((node.Splits as Array<{ Weight: number; NextNode: string }>).map((s) => `${s.Weight} => ${s.NextNode}`))}`);
      }
    }
    return out.join('\n');
  } catch (err) {
    return `(${(err as Error).message})`;
  }
}

/** What web's sidecar did and what Consul compiled for `api`, for failure messages. */
async function context(): Promise<string> {
  const lines = [`consul's chain for api: ${await compiledChain()}`];
  const interesting = ['reloading haproxy', 'haproxy reloaded', 'applied runtime changes'];
  for (const l of web()?.logs.filter((l) => interesting.includes(l.msg as string) || l.level === 'warn' || l.level === 'error') ?? []) {
    const { time, level, msg, reasons, err, upstream, item, kinds } = l;
    lines.push(`${time as string} web ${level as string} ${msg as string} ${JSON.stringify({ reasons, err, upstream, item, kinds })}`);
  }
  return lines.slice(-40).join('\n');
}

/** Runs `step`; a failure carries web's recent history and Consul's compiled chain. */
const explained = explainedBy(context);

/** Fails with the context (web's logs, Consul's chain) when `ok` is false. */
async function check(ok: boolean, message: string): Promise<void> {
  if (!ok) assert.fail(`${message}\n--- context ---\n${await context()}`);
}

/** The haproxy.cfg web's sidecar last applied. */
async function webConfig(): Promise<string> {
  const dir = web().find('created run directory')?.runDir;
  if (typeof dir !== 'string') throw new Error('no run directory logged');
  return readFile(join(dir, 'haproxy.cfg'), 'utf8');
}

let generation = 0;
/** The routes (JSON) of the router web serves, once applied. */
let appliedRoutes: string | undefined;

const probePath = (gen: number): string => `/__probe/${gen}`;
const probeRoute = (gen: number): Json => ({ Match: { HTTP: { PathExact: probePath(gen) } }, Destination: { Service: 'api-admin' } });
/** No router routes it: the catch-all answers it, unless a broken route takes everything (which would also answer any probe). */
const CONTROL_PATH = '/__probe/none';

async function waitForProbe(gen: number, timeoutMs = APPLY_TIMEOUT_MS): Promise<void> {
  let last = '';
  await explained(
    waitFor(
      `router generation ${gen} (${probePath(gen)} answered by api-admin, ${CONTROL_PATH} by the catch-all) to apply`,
      async () => {
        const a = await get(probePath(gen));
        last = who(a);
        if (a.report?.id !== 'api-admin' || a.status !== 200) return undefined;
        const control = await get(CONTROL_PATH);
        last = `${who(a)}, but ${CONTROL_PATH} (no route) -> ${who(control)}`;
        return control.report !== undefined && CATCH_ALL.includes(control.report.id) ? true : undefined;
      },
      timeoutMs,
      20,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last answer: ${last}`);
    }),
  );
}

/** Writes api's router (a probe route, then `routes`) without waiting; its generation. */
async function writeRouter(routes: readonly Json[]): Promise<number> {
  const gen = ++generation;
  appliedRoutes = undefined;
  await agent.put('/v1/config', { Kind: 'service-router', Name: 'api', Routes: [probeRoute(gen), ...routes] });
  return gen;
}

/** Makes `routes` api's router (unless it already is) and waits until web serves it; the ms it took (0 if nothing to do). */
async function useRouter(routes: readonly Json[]): Promise<number> {
  const key = JSON.stringify(routes);
  if (appliedRoutes === key) return 0;
  const startedAt = performance.now();
  const gen = await writeRouter(routes);
  await waitForProbe(gen);
  appliedRoutes = key;
  return msSince(startedAt);
}

async function writeSplitter(splits: readonly Json[]): Promise<void> {
  await agent.put('/v1/config', { Kind: 'service-splitter', Name: 'api', Splits: splits });
}

/** Back to the start: every app answers 200 at once with no extra header, no splitter. */
async function reset(): Promise<void> {
  for (const a of apps.values()) {
    a.delayMs = 0;
    a.failNext = 0;
    a.responseHeaders = [];
  }
  await deleteConfig('service-splitter', 'api');
}

/** One row of a matching table: a request, and whether the route under test must take it. */
interface MatchCase {
  what: string;
  req: Request;
  /** true: answered by the route's destination (api-admin); false: by the catch-all (api). */
  routed: boolean;
  /**
   * A request the proxy itself may refuse with 400 instead of passing it to the catch-all: Envoy
   * 1.23-1.26's default HTTP/1 codec (http-parser) refuses a lower-case method before routing.
   */
  orRefused?: true;
}

/**
 * Sends every case and fails with the whole table when one went elsewhere than expected. A routed
 * request must reach api-admin with 200, a fall-through one api-v1 or api-v2 (any status: a
 * request Node cannot parse still names its app), and every app must see the path unchanged.
 */
async function assertMatches(cases: readonly MatchCase[]): Promise<void> {
  const rows: string[] = [];
  let bad = 0;
  for (const c of cases) {
    const a = await send(c.req);
    const id = a.report?.id;
    const refused = c.orRefused === true && a.status === 400 && a.report === undefined;
    const ok = c.routed ? id === 'api-admin' && a.status === 200 : (id !== undefined && CATCH_ALL.includes(id)) || refused;
    const pathOk = a.report?.path === undefined || a.report.path === c.req.path;
    if (!ok || !pathOk) bad++;
    const sent = `${c.req.method ?? 'GET'} ${c.req.path}${(c.req.headers ?? []).map(([k, v]) => ` [${k}: ${v}]`).join('')}`;
    const want = c.routed ? 'the route' : `the catch-all${c.orRefused === true ? ' or a 400 from the proxy' : ''}`;
    rows.push(`${ok && pathOk ? 'ok  ' : 'FAIL'} ${c.what}: ${sent} -> ${who(a)} (want ${want})${pathOk ? '' : `; the app saw path ${a.report?.path}`}`);
  }
  await check(bad === 0, `${bad} of ${cases.length} requests went to the wrong place:\n${rows.join('\n')}`);
}

// ---------------------------------------------------------------------------------------------
// The routers of the tests.

const toAdmin = (http: Json): Json => ({ Match: { HTTP: http }, Destination: { Service: 'api-admin' } });

/**
 * One router per matching test, every route to api-admin, each route on a path or header name no
 * other request of its test uses. The inverted Exact is kept under `/inv`: an implementation that
 * matched it on an absent header (a plain `!{…}`) would take every other request of the test.
 */
const PATH_ROUTES: readonly Json[] = [toAdmin({ PathExact: '/exact' }), toAdmin({ PathPrefix: '/pfx' }), toAdmin({ PathPrefix: '/pq?mode=x' }), toAdmin({ PathRegex: '/re/[a-z]+' })];
const METHOD_ROUTES: readonly Json[] = [toAdmin({ PathPrefix: '/m/', Methods: ['get', 'DELETE'] })];
const HEADER_MATCH_ROUTES: readonly Json[] = [
  toAdmin({ Header: [{ Name: 'x-exact', Exact: 'yes' }] }),
  toAdmin({ Header: [{ Name: 'x-prefix', Prefix: 'ab' }] }),
  toAdmin({ Header: [{ Name: 'x-suffix', Suffix: 'yz' }] }),
  toAdmin({ Header: [{ Name: 'x-regex', Regex: '[0-9]+' }] }),
  toAdmin({ Header: [{ Name: 'x-present', Present: true }] }),
  toAdmin({ Header: [{ Name: 'X-Mixed-Case', Exact: 'v' }] }),
  toAdmin({ PathPrefix: '/inv', Header: [{ Name: 'x-invert', Exact: '1', Invert: true }] }),
  toAdmin({ PathPrefix: '/pinv', Header: [{ Name: 'x-pinv', Present: true, Invert: true }] }),
  toAdmin({ PathPrefix: '/and', Header: [{ Name: 'x-and', Exact: '1' }], QueryParam: [{ Name: 'k', Present: true }], Methods: ['POST'] }),
];
const QUERY_ROUTES: readonly Json[] = [
  toAdmin({ PathPrefix: '/qe', QueryParam: [{ Name: 'v', Exact: '1' }] }),
  toAdmin({ PathPrefix: '/qr', QueryParam: [{ Name: 'v', Regex: '[0-9]+' }] }),
  toAdmin({ PathPrefix: '/qp', QueryParam: [{ Name: 'debug', Present: true }] }),
];
const ENCODING_ROUTES: readonly Json[] = [toAdmin({ PathExact: '/enc/a%2Fb' }), toAdmin({ PathPrefix: '/dec/a/' })];
/** All of them in one router (the router-write and regex tests). */
const MATCHING_ROUTES: readonly Json[] = [...PATH_ROUTES, ...METHOD_ROUTES, ...HEADER_MATCH_ROUTES, ...QUERY_ROUTES, ...ENCODING_ROUTES];

const REWRITE_ROUTES: readonly Json[] = [
  { Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'api-admin', PrefixRewrite: '/' } },
  { Match: { HTTP: { PathExact: '/old' } }, Destination: { Service: 'api-admin', PrefixRewrite: '/new' } },
  { Match: { HTTP: { PathPrefix: '/keep' } }, Destination: { Service: 'api-admin' } },
];

const onV1 = (path: string, dest: Json = {}): Json => ({ Match: { HTTP: { PathPrefix: path } }, Destination: { ServiceSubset: 'v1', ...dest } });
const onV2 = (path: string, dest: Json = {}): Json => ({ Match: { HTTP: { PathPrefix: path } }, Destination: { ServiceSubset: 'v2', ...dest } });

const RETRY_ROUTES: readonly Json[] = [
  onV1('/retry/none'),
  onV1('/retry/codes', { NumRetries: 2, RetryOnStatusCodes: [503] }),
  onV1('/retry/default-count', { RetryOnStatusCodes: [503] }),
  onV1('/retry/count-only', { NumRetries: 2 }),
  onV1('/retry/other-code', { NumRetries: 2, RetryOnStatusCodes: [500] }),
  onV1('/retry/5xx', { RetryOn: ['5xx'] }),
  onV2('/retry/connect', { RetryOnConnectFailure: true }),
  onV2('/retry/no-connect'),
];

const TIMEOUT_ROUTES: readonly Json[] = [onV2('/slow/short', { RequestTimeout: `${ROUTE_TIMEOUT_MS / 1_000}s` }), onV1('/slow/default')];

/** Header operations: `x-s-*` only at split level, `x-r-*` only at route level, `x-both-*` at both. */
const headerOps = (level: 'split' | 'route'): Json =>
  level === 'split'
    ? { Add: { 'x-s-add': 'split', 'x-both-add': 'split' }, Set: { 'x-s-set': 'split', 'x-both-set': 'split', 'x-s-then-r-rm': 'split' }, Remove: ['x-s-rm'] }
    : { Add: { 'x-r-add': 'route', 'x-both-add': 'route' }, Set: { 'x-r-set': 'route', 'x-both-set': 'route' }, Remove: ['x-r-rm', 'x-s-then-r-rm'] };
const HEADER_ROUTES: readonly Json[] = [{ Match: { HTTP: { PathPrefix: '/hdr' } }, Destination: { Service: 'api', RequestHeaders: headerOps('route'), ResponseHeaders: headerOps('route') } }];
const HEADER_SPLITS: readonly Json[] = ['v1', 'v2'].map((subset) => ({ Weight: 50, ServiceSubset: subset, RequestHeaders: headerOps('split'), ResponseHeaders: headerOps('split') }));
/** The headers the header test sends (as the client, or the app on its responses), each with the value `from`. */
const HEADER_NAMES = ['x-s-add', 'x-r-add', 'x-both-add', 'x-s-set', 'x-r-set', 'x-both-set', 'x-s-rm', 'x-r-rm', 'x-s-then-r-rm', 'x-keep'];

// ---------------------------------------------------------------------------------------------

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-routing-'));
  const names = [...INSTANCES.flatMap((i) => [i.key, `${i.key}Sidecar`]), 'web', 'webSidecar', 'webToApi', 'dead', 'deadApp'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  // Protocols through service-defaults only (one protocol for every service of api's chain).
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
  // The set-up, not the sidecar: the agent merged api's protocol into web's upstream.
  const proxy = await agent.get<{ Proxy: { Upstreams: Array<{ DestinationName: string; Config?: Json }> } }>('/v1/agent/service/web-sidecar-proxy');
  assert.equal(proxy.Proxy.Upstreams.find((u) => u.DestinationName === 'api')?.Config?.protocol, 'http', JSON.stringify(proxy.Proxy.Upstreams));
  // Before any router: both api instances answer.
  let seen = new Set<string>();
  await explained(
    waitFor(
      'api-v1 and api-v2 to answer through web',
      async () => {
        const a = await get('/');
        if (a.status === 200 && a.report !== undefined) seen.add(a.report.id);
        else seen = new Set();
        return seen.size === 2 ? true : undefined;
      },
      APPLY_TIMEOUT_MS,
      20,
    ),
  );
});

after(async () => {
  await Promise.all([...sidecars.values()].map((s) => s.stop()));
  await Promise.all([...apps.values()].map((a: RunningApp) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('HTTP routing (service-router, service-splitter) with real Consul and HAProxy', () => {
  test('PathExact, PathPrefix (on the path without its query) and PathRegex (full match, path without query)', async () => {
    await reset();
    await useRouter(PATH_ROUTES);
    await assertMatches([
      { what: 'PathExact', req: { path: '/exact' }, routed: true },
      { what: 'PathExact ignores the query', req: { path: '/exact?x=1' }, routed: true },
      { what: 'PathExact, a trailing slash', req: { path: '/exact/' }, routed: false },
      { what: 'PathExact is case-sensitive', req: { path: '/Exact' }, routed: false },
      { what: 'PathExact, longer', req: { path: '/exactly' }, routed: false },
      { what: 'PathPrefix, equal', req: { path: '/pfx' }, routed: true },
      { what: 'PathPrefix, not at a segment boundary', req: { path: '/pfxab' }, routed: true },
      { what: 'PathPrefix, then a query', req: { path: '/pfx?x' }, routed: true },
      { what: 'PathPrefix is matched on the path alone (the query is not part of it)', req: { path: '/pf?x' }, routed: false },
      { what: 'PathPrefix, shorter', req: { path: '/pf' }, routed: false },
      { what: 'PathPrefix, not at the start', req: { path: '/x/pfx' }, routed: false },
      // Envoy strips the query before prefix matching (since 1.13.1, CVE-2020-8595): such a prefix never matches.
      { what: 'PathPrefix holding a query never matches: the same path and query', req: { path: '/pq?mode=xyz' }, routed: false },
      { what: 'PathPrefix holding a query never matches: exactly the prefix', req: { path: '/pq?mode=x' }, routed: false },
      { what: 'PathPrefix holding a query never matches: no query', req: { path: '/pq' }, routed: false },
      { what: 'PathRegex', req: { path: '/re/abc' }, routed: true },
      { what: 'PathRegex ignores the query', req: { path: '/re/abc?x=1' }, routed: true },
      { what: 'PathRegex is a full match (not at the start)', req: { path: '/x/re/abc' }, routed: false },
      { what: 'PathRegex is a full match (more after it)', req: { path: '/re/abc/d' }, routed: false },
      { what: 'PathRegex, a character outside the class', req: { path: '/re/ab1' }, routed: false },
    ]);
  });

  // A lower-case method reaches the catch-all's app here (Node answers it 400, naming itself); Envoy
  // would refuse it with its own 400 before routing. Either way the GET route must not take it.
  test('Methods: upper-cased by Consul, matched case-sensitively (a raw lower-case get is not GET)', async () => {
    await reset();
    await useRouter(METHOD_ROUTES);
    await assertMatches([
      { what: 'GET (written `get`)', req: { path: '/m/x' }, routed: true },
      { what: 'DELETE', req: { method: 'DELETE', path: '/m/x' }, routed: true },
      { what: 'POST is not listed', req: { method: 'POST', path: '/m/x', headers: [['content-length', '0']] }, routed: false },
      { what: 'a lower-case get', req: { method: 'get', path: '/m/x' }, routed: false, orRefused: true },
      { what: 'a lower-case delete', req: { method: 'delete', path: '/m/x' }, routed: false, orRefused: true },
      { what: 'a mixed-case Get', req: { method: 'Get', path: '/m/x' }, routed: false, orRefused: true },
    ]);
  });

  test('Header Exact, Prefix, Suffix, Regex, Present and Invert (a repeated header is its values joined with ",")', async () => {
    await reset();
    await useRouter(HEADER_MATCH_ROUTES);
    await assertMatches([
      { what: 'Exact', req: { path: '/h', headers: [['x-exact', 'yes']] }, routed: true },
      { what: 'Exact, another value', req: { path: '/h', headers: [['x-exact', 'no']] }, routed: false },
      { what: 'Exact is case-sensitive in the value', req: { path: '/h', headers: [['x-exact', 'YES']] }, routed: false },
      { what: 'Exact, header absent', req: { path: '/h' }, routed: false },
      {
        what: 'Exact, sent twice (yes,yes)',
        req: {
          path: '/h',
          headers: [
            ['x-exact', 'yes'],
            ['x-exact', 'yes'],
          ],
        },
        routed: false,
      },
      { what: 'Exact, the name in another case', req: { path: '/h', headers: [['X-EXACT', 'yes']] }, routed: true },
      { what: 'a name written in mixed case in the entry', req: { path: '/h', headers: [['x-mixed-case', 'v']] }, routed: true },
      { what: 'a name written in mixed case, another value', req: { path: '/h', headers: [['x-mixed-case', 'V']] }, routed: false },
      { what: 'Prefix', req: { path: '/h', headers: [['x-prefix', 'abc']] }, routed: true },
      { what: 'Prefix, not at the start', req: { path: '/h', headers: [['x-prefix', 'xab']] }, routed: false },
      {
        what: 'Prefix, sent twice (ab1,zz)',
        req: {
          path: '/h',
          headers: [
            ['x-prefix', 'ab1'],
            ['x-prefix', 'zz'],
          ],
        },
        routed: true,
      },
      {
        what: 'Prefix, sent twice (zz,ab1)',
        req: {
          path: '/h',
          headers: [
            ['x-prefix', 'zz'],
            ['x-prefix', 'ab1'],
          ],
        },
        routed: false,
      },
      { what: 'Suffix', req: { path: '/h', headers: [['x-suffix', 'xyz']] }, routed: true },
      { what: 'Suffix, not at the end', req: { path: '/h', headers: [['x-suffix', 'yzx']] }, routed: false },
      {
        what: 'Suffix, sent twice (a,xyz)',
        req: {
          path: '/h',
          headers: [
            ['x-suffix', 'a'],
            ['x-suffix', 'xyz'],
          ],
        },
        routed: true,
      },
      {
        what: 'Suffix, sent twice (xyz,a)',
        req: {
          path: '/h',
          headers: [
            ['x-suffix', 'xyz'],
            ['x-suffix', 'a'],
          ],
        },
        routed: false,
      },
      { what: 'Regex', req: { path: '/h', headers: [['x-regex', '123']] }, routed: true },
      { what: 'Regex is a full match (more after it)', req: { path: '/h', headers: [['x-regex', '12a']] }, routed: false },
      { what: 'Regex is a full match (before it)', req: { path: '/h', headers: [['x-regex', 'a12']] }, routed: false },
      {
        what: 'Regex, sent twice (1,2: the joined value holds a comma)',
        req: {
          path: '/h',
          headers: [
            ['x-regex', '1'],
            ['x-regex', '2'],
          ],
        },
        routed: false,
      },
      { what: 'Present', req: { path: '/h', headers: [['x-present', 'v']] }, routed: true },
      { what: 'Present with an empty value', req: { path: '/h', headers: [['x-present', '']] }, routed: true },
      { what: 'Present, header absent', req: { path: '/h' }, routed: false },
      { what: 'Exact+Invert, another value', req: { path: '/inv', headers: [['x-invert', '2']] }, routed: true },
      { what: 'Exact+Invert, the value', req: { path: '/inv', headers: [['x-invert', '1']] }, routed: false },
      { what: 'Exact+Invert, header absent (no match: invert only applies to a present header)', req: { path: '/inv' }, routed: false },
      {
        what: 'Exact+Invert, sent twice (1,1 is not 1)',
        req: {
          path: '/inv',
          headers: [
            ['x-invert', '1'],
            ['x-invert', '1'],
          ],
        },
        routed: true,
      },
      { what: 'Present+Invert, header absent', req: { path: '/pinv' }, routed: true },
      { what: 'Present+Invert, header present', req: { path: '/pinv', headers: [['x-pinv', '1']] }, routed: false },
      {
        what: 'Path, header, query and method together',
        req: {
          method: 'POST',
          path: '/and?k',
          headers: [
            ['x-and', '1'],
            ['content-length', '0'],
          ],
        },
        routed: true,
      },
      { what: 'all but the header', req: { method: 'POST', path: '/and?k', headers: [['content-length', '0']] }, routed: false },
      {
        what: 'all but the query',
        req: {
          method: 'POST',
          path: '/and',
          headers: [
            ['x-and', '1'],
            ['content-length', '0'],
          ],
        },
        routed: false,
      },
      { what: 'all but the method', req: { path: '/and?k', headers: [['x-and', '1']] }, routed: false },
    ]);
  });

  test('QueryParam Exact, Regex and Present: the first occurrence, raw, a value-less name is present', async () => {
    await reset();
    await useRouter(QUERY_ROUTES);
    await assertMatches([
      { what: 'Exact', req: { path: '/qe?v=1' }, routed: true },
      { what: 'Exact, another value', req: { path: '/qe?v=2' }, routed: false },
      { what: 'Exact, repeated: the first counts (v=1&v=2)', req: { path: '/qe?v=1&v=2' }, routed: true },
      { what: 'Exact, repeated: the first counts (v=2&v=1)', req: { path: '/qe?v=2&v=1' }, routed: false },
      { what: 'Exact, after another parameter', req: { path: '/qe?a=1&v=1' }, routed: true },
      { what: 'Exact, a longer name', req: { path: '/qe?vv=1' }, routed: false },
      { what: 'Exact, value-less first (v&v=1)', req: { path: '/qe?v&v=1' }, routed: false },
      { what: 'Exact, %-encoded value (not decoded)', req: { path: '/qe?v=%31' }, routed: false },
      { what: 'Exact, `;` is no separator', req: { path: '/qe?a=1;v=1' }, routed: false },
      { what: 'Exact, no query', req: { path: '/qe' }, routed: false },
      { what: 'Regex', req: { path: '/qr?v=123' }, routed: true },
      { what: 'Regex is a full match', req: { path: '/qr?v=12a' }, routed: false },
      { what: 'Regex, repeated: the first counts (v=1&v=x)', req: { path: '/qr?v=1&v=x' }, routed: true },
      { what: 'Regex, repeated: the first counts (v=x&v=1)', req: { path: '/qr?v=x&v=1' }, routed: false },
      { what: 'Present, value-less', req: { path: '/qp?debug' }, routed: true },
      { what: 'Present, empty value', req: { path: '/qp?debug=' }, routed: true },
      { what: 'Present, with a value after another parameter', req: { path: '/qp?a=1&debug=0' }, routed: true },
      { what: 'Present, a longer name', req: { path: '/qp?debugx=1' }, routed: false },
      { what: 'Present, no query', req: { path: '/qp' }, routed: false },
    ]);
  });

  test('%-encoded paths are matched raw, and reach the app unchanged', async () => {
    await reset();
    await useRouter([...ENCODING_ROUTES, ...PATH_ROUTES]);
    await assertMatches([
      { what: 'PathExact with %2F, sent the same', req: { path: '/enc/a%2Fb' }, routed: true },
      { what: 'PathExact with %2F, sent decoded', req: { path: '/enc/a/b' }, routed: false },
      { what: 'PathExact with %2F, sent in lower-case hex', req: { path: '/enc/a%2fb' }, routed: false },
      { what: 'PathPrefix /dec/a/, sent with %2F (no decoding)', req: { path: '/dec/a%2Fx' }, routed: false },
      { what: 'PathPrefix /dec/a/, sent plain', req: { path: '/dec/a/x' }, routed: true },
      { what: 'PathPrefix /pfx, sent %-encoded', req: { path: '/%70fx' }, routed: false },
      { what: 'no merging of slashes', req: { path: '//exact' }, routed: false },
      { what: 'no dot-segment removal', req: { path: '/x/../exact' }, routed: false },
    ]);
  });

  test('PrefixRewrite: /admin → / gives //users with the query, and the app sees x-envoy-original-path', async () => {
    await reset();
    await useRouter(REWRITE_ROUTES);
    const cases: Array<{ sent: string; id: string; path: string; original: string | undefined }> = [
      { sent: '/admin/users?q=1', id: 'api-admin', path: '//users?q=1', original: '/admin/users?q=1' },
      { sent: '/adminx', id: 'api-admin', path: '/x', original: '/adminx' },
      { sent: '/admin', id: 'api-admin', path: '/', original: '/admin' },
      { sent: '/admin?a=%2F', id: 'api-admin', path: '/?a=%2F', original: '/admin?a=%2F' },
      { sent: '/old?a=1', id: 'api-admin', path: '/new?a=1', original: '/old?a=1' },
      { sent: '/keep/a?b=1', id: 'api-admin', path: '/keep/a?b=1', original: undefined },
      { sent: '/x/admin', id: 'catch-all', path: '/x/admin', original: undefined },
    ];
    const rows: string[] = [];
    let bad = 0;
    for (const c of cases) {
      const a = await get(c.sent);
      const id = a.report?.id;
      const seenOriginal = a.report?.headers['x-envoy-original-path'];
      const ok =
        a.status === 200 &&
        (c.id === 'catch-all' ? id !== undefined && CATCH_ALL.includes(id) : id === c.id) &&
        a.report?.path === c.path &&
        JSON.stringify(seenOriginal) === JSON.stringify(c.original === undefined ? undefined : [c.original]);
      if (!ok) bad++;
      rows.push(
        `${ok ? 'ok  ' : 'FAIL'} ${c.sent} -> ${who(a)} path ${a.report?.path} x-envoy-original-path ${JSON.stringify(seenOriginal)} ` +
          `(want ${c.id} path ${c.path} x-envoy-original-path ${JSON.stringify(c.original)})`,
      );
    }
    note(`PrefixRewrite: ${rows.filter((r) => r.startsWith('ok')).length} of ${rows.length} as Envoy`);
    await check(bad === 0, `PrefixRewrite:\n${rows.join('\n')}`);
  });

  test('split 90/10 between subsets v1 and v2 within binomial bounds, then 50/50 under traffic with no reload and no failed request', async () => {
    await reset();
    /** Counts of who answered `n` requests to `/` (4 at a time), failures as `status <n>`. */
    const drive = async (n: number): Promise<Map<string, number>> => {
      const counts = new Map<string, number>();
      let next = 0;
      const loop = async (): Promise<void> => {
        while (next < n) {
          next++;
          const a = await get('/');
          const key = a.status === 200 && a.report !== undefined ? a.report.id : `status ${a.status}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
      };
      await Promise.all([loop(), loop(), loop(), loop()]);
      return counts;
    };
    /** |v2 - n p| within SPLIT_SIGMAS standard deviations of Binomial(n, p), and nobody else answered. */
    const assertShare = async (counts: Map<string, number>, p: number, what: string): Promise<string> => {
      const n = [...counts.values()].reduce((s, c) => s + c, 0);
      const v2 = counts.get('api-v2') ?? 0;
      const sigma = Math.sqrt(n * p * (1 - p));
      const [low, high] = [Math.ceil(n * p - SPLIT_SIGMAS * sigma), Math.floor(n * p + SPLIT_SIGMAS * sigma)];
      const shown = `${what}: ${JSON.stringify(Object.fromEntries(counts))} of ${n}; v2 share ${(v2 / n).toFixed(3)} (bound ${low}..${high} = ${SPLIT_SIGMAS} sigma of ${(p * 100).toFixed(0)} %)`;
      await check((counts.get('api-v1') ?? 0) + v2 === n, `${shown}: not every request was answered by v1 or v2`);
      await check(v2 >= low && v2 <= high, `${shown}: outside the bound`);
      return shown;
    };
    try {
      // Whatever router web serves, `/` goes to its catch-all: service api, now its splitter.
      await writeSplitter([
        { Weight: 90, ServiceSubset: 'v1' },
        { Weight: 10, ServiceSubset: 'v2' },
      ]);
      // Applied once a window of 60 requests has at most 15 from v2 (round robin gives 30; 90/10 more than 15 about once in 2,000).
      await explained(
        waitFor(
          'the 90/10 split to apply',
          async () => {
            const c = await drive(60);
            return (c.get('api-v1') ?? 0) >= 45 && (c.get('api-v2') ?? 0) <= 15 ? true : undefined;
          },
          APPLY_TIMEOUT_MS,
          0,
        ),
      );
      const ninety = await assertShare(await drive(SPLIT_REQUESTS), 0.1, 'split 90/10');

      const traffic = new Traffic(port('webToApi'), 4, 60_000);
      try {
        const v2Of = (): { v2: number; all: number } => {
          let v2 = 0;
          let all = 0;
          for (const [body, n] of traffic.report.answers) {
            all += n;
            if (body.includes('"id":"api-v2"')) v2 += n;
          }
          return { v2, all };
        };
        await waitFor('traffic to flow', async () => (traffic.report.ok >= 200 ? true : undefined), 10_000, 20);
        const mark = web().logs.length;
        const changedAt = performance.now();
        await writeSplitter([
          { Weight: 50, ServiceSubset: 'v1' },
          { Weight: 50, ServiceSubset: 'v2' },
        ]);
        // Applied once 100 consecutive answers hold more than 30 % from v2 (90/10 gives that less than once in 10^7).
        await explained(
          waitFor(
            'the 50/50 split to apply',
            async () => {
              const start = v2Of();
              await waitFor('100 answers', async () => (v2Of().all - start.all >= 100 ? true : undefined), 10_000, 5);
              const now = v2Of();
              return (now.v2 - start.v2) / (now.all - start.all) > 0.3 ? true : undefined;
            },
            APPLY_TIMEOUT_MS,
            0,
          ),
        );
        const applyMs = msSince(changedAt);
        const start = v2Of();
        await waitFor(`${SPLIT_REQUESTS} answers at 50/50`, async () => (v2Of().all - start.all >= SPLIT_REQUESTS ? true : undefined), 60_000, 10);
        const report = await traffic.stop();
        const end = v2Of();
        const fifty = await assertShare(
          new Map([
            ['api-v1', end.all - start.all - (end.v2 - start.v2)],
            ['api-v2', end.v2 - start.v2],
          ]),
          0.5,
          'split 50/50 (continuous traffic)',
        );
        const reloads = web()
          .logs.slice(mark)
          .filter((l) => l.msg === 'reloading haproxy');
        note(ninety);
        note(
          `${fifty}; the weight change served ${applyMs} ms after the write; traffic ${report.ok} ok, ${report.failed} failed; ` +
            `${reloads.length} reload(s) ${JSON.stringify(reloads.map((r) => r.reasons))}`,
        );
        await check(report.failed === 0, `failed requests during the weight change: ${report.failures.join('\n')}`);
        await check(reloads.length === 0, `the weight change reloaded HAProxy: ${JSON.stringify(reloads.map((r) => r.reasons))}`);
      } finally {
        await traffic.stop();
      }
    } finally {
      await deleteConfig('service-splitter', 'api');
    }
  });

  test('retries: none without a policy; RetryOnStatusCodes with NumRetries (default 1); RetryOn 5xx; RetryOnConnectFailure', async () => {
    await reset();
    await useRouter(RETRY_ROUTES);
    const v1 = app('api-v1');
    const rows: string[] = [];
    let bad = 0;
    /** api-v1 fails its next `fail` requests; the request to `path` must end with `status` after `attempts` requests reached the app. */
    const attempt = async (path: string, fail: number, status: number, attempts: number, what: string): Promise<void> => {
      v1.failNext = fail;
      const before = v1.requests;
      const a = await get(path);
      const seen = v1.requests - before;
      v1.failNext = 0;
      // Envoy's default outlier detection (Consul always enables it) ejects a host after 5
      // consecutive 5xx: a good answer after each case keeps api-v1 in, as it would be under Envoy.
      const good = await get(path);
      const ok = a.status === status && a.report?.id === 'api-v1' && seen === attempts && good.status === 200;
      if (!ok) bad++;
      rows.push(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${path} with the next ${fail} failing -> ${who(a)} after ${seen} attempt(s) (want ${status} after ${attempts}); then ${who(good)} (want 200)`);
    };
    await attempt('/retry/none', 1, 503, 1, 'no retry policy: the 503 reaches the client');
    await attempt('/retry/codes', 2, 200, 3, 'NumRetries 2, RetryOnStatusCodes [503]');
    await attempt('/retry/codes', 3, 503, 3, 'NumRetries 2, RetryOnStatusCodes [503], one failure too many');
    await attempt('/retry/default-count', 1, 200, 2, 'RetryOnStatusCodes [503], NumRetries unset (1)');
    await attempt('/retry/default-count', 2, 503, 2, 'RetryOnStatusCodes [503], NumRetries unset (1), two failures');
    await attempt('/retry/count-only', 1, 503, 1, 'NumRetries 2 without a condition retries nothing');
    await attempt('/retry/other-code', 1, 503, 1, 'RetryOnStatusCodes [500] does not retry a 503');
    await attempt('/retry/5xx', 1, 200, 2, 'RetryOn [5xx], NumRetries unset (1)');

    // A connect failure: a second v2 endpoint whose port refuses connections.
    const dead = `127.0.0.1:${port('dead')}`;
    try {
      await agent.put('/v1/agent/service/register', { ID: 'api-dead', Name: 'api', Port: port('deadApp'), Address: '127.0.0.1', Meta: { version: 'dead' } });
      await agent.put('/v1/agent/service/register', {
        Kind: 'connect-proxy',
        ID: 'api-dead-sidecar-proxy',
        Name: 'api-sidecar-proxy',
        Address: '127.0.0.1',
        Port: port('dead'),
        Meta: { version: 'v2' },
        Proxy: { DestinationServiceName: 'api', DestinationServiceID: 'api-dead', LocalServiceAddress: '127.0.0.1', LocalServicePort: port('deadApp') },
      });
      const mark = web().logs.length;
      await explained(
        waitFor(
          'the refusing v2 endpoint in web’s applied configuration',
          async () => ((await webConfig()).includes(dead) && lastChangeLive(web().logs, mark) ? true : undefined),
          APPLY_TIMEOUT_MS,
          100,
        ),
      );
      const run = async (path: string, n: number): Promise<{ answers: string[]; ms: number }> => {
        const startedAt = performance.now();
        const answers: string[] = [];
        for (let i = 0; i < n; i++) answers.push(who(await get(path)));
        return { answers, ms: msSince(startedAt) };
      };
      // Without a policy the first pick of the refusing endpoint fails (Envoy ejects it only after 5 consecutive failures).
      const without = await run('/retry/no-connect', 6);
      const withRetry = await run('/retry/connect', 10);
      const failedWithout = without.answers.filter((w) => w !== 'api-v2 200').length;
      const failedWith = withRetry.answers.filter((w) => w !== 'api-v2 200').length;
      note(
        `connect failures (v2 = api-v2 + a refusing endpoint): without a policy ${failedWithout} of ${without.answers.length} failed (${without.ms} ms); ` +
          `RetryOnConnectFailure ${failedWith} of ${withRetry.answers.length} failed (${withRetry.ms} ms)`,
      );
      const okWithout = failedWithout >= 1;
      const okWith = failedWith === 0;
      if (!okWithout) bad++;
      if (!okWith) bad++;
      rows.push(`${okWithout ? 'ok  ' : 'FAIL'} no retry policy, an endpoint refusing: ${JSON.stringify(without.answers)} (want at least one failure)`);
      rows.push(`${okWith ? 'ok  ' : 'FAIL'} RetryOnConnectFailure, an endpoint refusing: ${JSON.stringify(withRetry.answers)} (want every request answered by api-v2)`);
    } finally {
      await agent.put('/v1/agent/service/deregister/api-dead-sidecar-proxy').catch(() => undefined);
      await agent.put('/v1/agent/service/deregister/api-dead').catch(() => undefined);
      await waitFor('the refusing endpoint to leave web’s configuration', async () => (!(await webConfig()).includes(dead) ? true : undefined), APPLY_TIMEOUT_MS, 100).catch(() => undefined);
    }
    note(`retries: ${rows.filter((r) => r.startsWith('ok')).length} of ${rows.length} as Envoy`);
    await check(bad === 0, `retries:\n${rows.join('\n')}`);
  });

  test('RequestTimeout: 1s gives a 504 after about 1 s; without one a route times out at 15 s (504)', async () => {
    await reset();
    await useRouter(TIMEOUT_ROUTES);
    app('api-v2').delayMs = 2 * ROUTE_TIMEOUT_MS;
    app('api-v1').delayMs = DEFAULT_ROUTE_TIMEOUT_MS + 1_000;
    try {
      // The slow case runs while the short one is measured.
      const slow = send({ path: '/slow/default', timeoutMs: DEFAULT_ROUTE_TIMEOUT_MS + 10_000 });
      const short = await send({ path: '/slow/short', timeoutMs: 10_000 });
      const long = await slow;
      note(
        `RequestTimeout ${ROUTE_TIMEOUT_MS} ms, app answering after ${2 * ROUTE_TIMEOUT_MS} ms: ${who(short)} after ${short.ms} ms; ` +
          `no RequestTimeout, app answering after ${DEFAULT_ROUTE_TIMEOUT_MS + 1_000} ms: ${who(long)} after ${long.ms} ms`,
      );
      await check(short.status === 504, `RequestTimeout 1s: ${who(short)} after ${short.ms} ms, want 504`);
      await check(short.ms >= ROUTE_TIMEOUT_MS - TIMEOUT_EARLY_MS && short.ms <= ROUTE_TIMEOUT_MS + TIMEOUT_LATE_MS, `RequestTimeout 1s: the 504 came after ${short.ms} ms`);
      await check(long.status === 504, `no RequestTimeout: ${who(long)} after ${long.ms} ms, want 504 at ${DEFAULT_ROUTE_TIMEOUT_MS} ms`);
      await check(long.ms >= DEFAULT_ROUTE_TIMEOUT_MS - TIMEOUT_EARLY_MS && long.ms <= DEFAULT_ROUTE_TIMEOUT_MS + TIMEOUT_LATE_MS, `no RequestTimeout: the 504 came after ${long.ms} ms`);
    } finally {
      app('api-v1').delayMs = 0;
      app('api-v2').delayMs = 0;
    }
  });

  test('RequestHeaders and ResponseHeaders Add/Set/Remove: split level first, route level last (it wins)', async () => {
    await reset();
    for (const a of apps.values()) a.responseHeaders = HEADER_NAMES.map((n) => [n, 'app']);
    const sent: Array<[string, string]> = HEADER_NAMES.map((n) => [n, 'client']);
    /** What Envoy leaves of the headers when `from` sent them: split level (remove, add, set), then route level if `routed`. */
    const expected = (from: string, routed: boolean): Record<string, string[] | undefined> => ({
      'x-s-add': [from, 'split'],
      'x-r-add': routed ? [from, 'route'] : [from],
      'x-both-add': routed ? [from, 'split', 'route'] : [from, 'split'],
      'x-s-set': ['split'],
      'x-r-set': routed ? ['route'] : [from],
      'x-both-set': routed ? ['route'] : ['split'],
      'x-s-rm': undefined,
      'x-r-rm': routed ? undefined : [from],
      'x-s-then-r-rm': routed ? undefined : ['split'],
      'x-keep': [from],
    });
    const pick = (headers: Record<string, string[]> | undefined): Record<string, string[] | undefined> => Object.fromEntries(HEADER_NAMES.map((n) => [n, headers?.[n]]));
    try {
      await writeSplitter(HEADER_SPLITS);
      await useRouter(HEADER_ROUTES);
      // The split level is applied once the catch-all's requests carry its Set.
      await explained(
        waitFor('the split-level header operations to apply', async () => ((await get('/plain', sent)).report?.headers['x-s-set']?.[0] === 'split' ? true : undefined), APPLY_TIMEOUT_MS, 20),
      );
      const rows: string[] = [];
      let bad = 0;
      for (const [path, routed] of [
        ['/hdr', true],
        ['/plain', false],
      ] as const) {
        const a = await get(path, sent);
        const cases = [
          { what: 'request (seen by the app)', got: pick(a.report?.headers), want: expected('client', routed) },
          { what: 'response (seen by the client)', got: pick(a.headers), want: expected('app', routed) },
        ];
        for (const c of cases) {
          for (const name of HEADER_NAMES) {
            const ok = JSON.stringify(c.got[name]) === JSON.stringify(c.want[name]);
            if (!ok) bad++;
            rows.push(
              `${ok ? 'ok  ' : 'FAIL'} ${path} (${routed ? 'route /hdr + split' : 'catch-all: split only'}) ${c.what} ${name}: ${JSON.stringify(c.got[name])} (want ${JSON.stringify(c.want[name])})`,
            );
          }
        }
        await check(a.status === 200 && a.report !== undefined && CATCH_ALL.includes(a.report.id), `${path}: ${who(a)}`);
      }
      note(`header operations: ${rows.filter((r) => r.startsWith('ok')).length} of ${rows.length} headers as Envoy`);
      await check(bad === 0, `header operations:\n${rows.join('\n')}`);
    } finally {
      await deleteConfig('service-splitter', 'api');
    }
  });

  // Requests on new connections (no keep-alive): a reload closes idle keep-alive connections, which
  // costs a client an occasional request that is not the router's doing.
  test('router writes: each reloads once naming the upstream, 0 failed requests under traffic; time to apply', async () => {
    await reset();
    await useRouter(MATCHING_ROUTES);
    const traffic = new Traffic(port('webToApi'), 4, 120_000, { keepAlive: false });
    const times: number[] = [];
    const perWrite: Array<Array<Record<string, unknown>>> = [];
    try {
      await waitFor('traffic to flow', async () => (traffic.report.ok >= 100 ? true : undefined), 10_000, 20);
      const first = web().logs.length;
      for (let i = 0; i < ROUTER_WRITES; i++) {
        const mark = web().logs.length;
        const startedAt = performance.now();
        // Same targets, one more route each time: a change of routes only.
        const gen = await writeRouter([...MATCHING_ROUTES, toAdmin({ PathExact: `/write/${i}` })]);
        await waitForProbe(gen);
        times.push(msSince(startedAt));
        perWrite.push(
          web()
            .logs.slice(mark)
            .filter((l) => l.msg === 'reloading haproxy'),
        );
      }
      // A late reload would land here.
      await sleep(1_000);
      const report = await traffic.stop();
      const reloads = web()
        .logs.slice(first)
        .filter((l) => l.msg === 'reloading haproxy');
      const sorted = [...times].sort((a, b) => a - b);
      const pct = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
      note(
        `${ROUTER_WRITES} router writes: applied after p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms (all ${JSON.stringify(times)}); ` +
          `${reloads.length} reload(s), per write ${JSON.stringify(perWrite.map((r) => r.length))}; traffic ${report.ok} ok, ${report.failed} failed; ` +
          `reasons e.g. ${JSON.stringify(reloads[0]?.reasons)}`,
      );
      await check(report.failed === 0, `failed requests while routers changed: ${report.failures.join('\n')}`);
      await check(
        perWrite.every((r) => r.length === 1) && reloads.length === ROUTER_WRITES,
        `want one reload per router write: ${JSON.stringify(perWrite.map((r) => r.length))}, ${reloads.length} in all`,
      );
      const unnamed = reloads.filter((r) => !JSON.stringify(r.reasons ?? []).includes('api'));
      await check(unnamed.length === 0, `reload reasons that do not name the upstream api: ${JSON.stringify(unnamed.map((r) => r.reasons))}`);
    } finally {
      await traffic.stop();
      appliedRoutes = undefined;
    }
  });

  test('a burst of config-entry writes (a splitter, then a router) reloads once', async () => {
    await reset();
    await useRouter(MATCHING_ROUTES);
    const mark = web().logs.length;
    const startedAt = performance.now();
    await writeSplitter([
      { Weight: 50, ServiceSubset: 'v1' },
      { Weight: 50, ServiceSubset: 'v2' },
    ]);
    const gen = await writeRouter([...MATCHING_ROUTES, toAdmin({ PathExact: '/burst' })]);
    const writtenMs = msSince(startedAt);
    await waitForProbe(gen);
    const appliedMs = msSince(startedAt);
    // A late second reload would land here.
    await sleep(1_500);
    const reloads = web()
      .logs.slice(mark)
      .filter((l) => l.msg === 'reloading haproxy');
    note(`burst: splitter and router written within ${writtenMs} ms, served after ${appliedMs} ms; ${reloads.length} reload(s): ${JSON.stringify(reloads.map((r) => r.reasons))}`);
    await check(reloads.length === 1, `want one reload for the burst, got ${reloads.length}: ${JSON.stringify(reloads.map((r) => r.reasons))}`);
    await reset();
    appliedRoutes = undefined;
  });

  test('a regex RE2 refuses (lookahead): Consul accepts the router, web logs it and keeps serving the last good routes', async () => {
    await reset();
    appliedRoutes = undefined;
    await useRouter(MATCHING_ROUTES);
    const good = generation;
    const mark = web().logs.length;
    const BAD = '/la(?=x)y';
    // Consul accepts and compiles it (Go's regexp would refuse it; Consul does not check).
    const writtenAt = performance.now();
    const bad = await writeRouter([...MATCHING_ROUTES, toAdmin({ PathRegex: BAD })]);
    const compiled = await compiledChain();
    assert.ok(compiled.includes(JSON.stringify(BAD).slice(1, -1)), `Consul's chain holds the lookahead:\n${compiled}`);
    const refusals = (): Array<Record<string, unknown>> =>
      web()
        .logs.slice(mark)
        .filter((l) => (l.level === 'error' || l.level === 'warn') && (JSON.stringify(l).includes('(?=x)') || JSON.stringify(l).includes('service-router')));
    // Whichever comes first: the refusal logged, or (wrong) the refused router served.
    await explained(
      waitFor(
        `web to log the refused regex ${BAD} (or to serve the router holding it)`,
        async () => (refusals().length > 0 || (await get(probePath(bad))).report?.id === 'api-admin' ? true : undefined),
        APPLY_TIMEOUT_MS,
        100,
      ),
    );
    // Give a (wrong) apply the time a good write takes.
    await sleep(2_000);
    const stillGood = await get(probePath(good));
    const notNew = await get(probePath(bad));
    const matching = await get('/exact');
    const logged = refusals();
    const reloads = web()
      .logs.slice(mark)
      .filter((l) => l.msg === 'reloading haproxy');
    const first = logged[0];
    note(
      `lookahead ${BAD}: web logged ${first === undefined ? 'nothing' : JSON.stringify({ level: first.level, msg: first.msg, err: first.err })} ` +
        `(${logged.length} such line(s) within ${msSince(writtenAt)} ms of the write); ${reloads.length} reload(s) after the write; ` +
        `the refused router's probe -> ${who(notNew)}`,
    );
    await check(notNew.report !== undefined && CATCH_ALL.includes(notNew.report.id), `the refused router's probe ${probePath(bad)} must not be served: ${who(notNew)}`);
    await check(stillGood.report?.id === 'api-admin', `the last good router's probe ${probePath(good)}: ${who(stillGood)}`);
    await check(matching.report?.id === 'api-admin', `the last good router's /exact: ${who(matching)}`);
    await check(logged.length > 0, `web logged no warning or error naming the refused regex ${BAD}`);
    // Logged once, as an error: the refused answer is taken (the watch moves on), not retried.
    await check(logged.length === 1 && first?.level === 'error', `want one error line for the refused chain, got ${logged.length}: ${JSON.stringify(logged.map((l) => [l.level, l.msg]))}`);
    // A good router applies again.
    appliedRoutes = undefined;
    await useRouter(MATCHING_ROUTES);
  });
});
