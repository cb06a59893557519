/**
 * L7 intentions end to end, with a real Consul dev agent and real HAProxy: one HTTP service, `api`
 * (service-defaults protocol http), behind its sidecar; its app reports every request as it arrived
 * (method, raw path, header lines). Requests go directly over mTLS to the sidecar's public listener
 * with the leaf certificates of several source services, written as raw HTTP/1.1 so the exact bytes
 * are ours (a header sent twice, a lower-case method, `%2F`, queries). Allowed = the app's 200;
 * denied = Envoy's `403` with the body `RBAC: access denied`.
 *
 * Every source has its own intention on `api`: L7 policies for paths, headers, methods and a deny
 * before an allow are rendered as HAProxy ACL chains; one policy holds a header pattern with a
 * comma (Exact `a,b`), so the agent decides all of its requests, and it holds the path and header
 * permissions of the rendered ones too, so the same requests must get the same answers from both.
 * Then: the default policy (default allow here, default deny on a second agent with ACLs), L4
 * intentions per request, an intention change on an open keep-alive connection, an agent-decided
 * policy changed under keep-alive traffic (no request both policies allow may be refused), reload
 * counts and the time until a change is seen, and a regex RE2 refuses.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { type HttpReport, type RunningApp, startReportingHttpApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { msSince, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { parsePermissions } from '../../src/consul/permissions.js';
import { l7Policy } from '../../src/domain/intentions.js';
import { xfccElement } from '../../src/intentions/xfcc.js';

const ROOT_TOKEN = '7d1e2c3b-4a59-4c6d-9e8f-0a1b2c3d4e5f';
/** Every request has its own bound, so a hanging connection fails the test instead of stalling it. */
const REQUEST_TIMEOUT_MS = 3_000;
/** How long an intention change may take to be seen. */
const APPLY_TIMEOUT_MS = 10_000;
/** After a change is seen: how long to wait for reloads it may still cause (the quiet period is 150 ms, at most 1 s). */
const RELOAD_SETTLE_MS = 1_500;
const RBAC_DENIED_BODY = 'RBAC: access denied';

type Json = Record<string, unknown>;
type Header = readonly [string, string];
type Verdict = 'allow' | 'deny';

// ---------------------------------------------------------------------------------------------
// Permissions, as Consul's service-intentions entries spell them.

const DENY_REST: Json = { Action: 'deny', HTTP: { PathPrefix: '/' } };
const allow = (http: Json): Json => ({ Action: 'allow', HTTP: http });
const header = (name: string, match: Json): Json => ({ Name: name, ...match });

const PATH_PERMISSIONS: Json[] = [allow({ PathExact: '/a' }), allow({ PathPrefix: '/p/' }), allow({ PathRegex: '/r/[0-9]+' })];
const HEADER_PERMISSIONS: Json[] = [
  allow({ PathExact: '/present', Header: [header('x-p', { Present: true })] }),
  allow({ PathExact: '/exact', Header: [header('x-e', { Exact: '1' })] }),
  allow({ PathExact: '/prefix', Header: [header('x-pre', { Prefix: 'ab' })] }),
  allow({ PathExact: '/suffix', Header: [header('x-suf', { Suffix: 'yz' })] }),
  allow({ PathExact: '/regex', Header: [header('x-re', { Regex: '[0-9]+' })] }),
  allow({ PathExact: '/invert', Header: [header('x-i', { Exact: '1', Invert: true })] }),
  allow({ PathExact: '/absent', Header: [header('x-ip', { Present: true, Invert: true })] }),
];
const METHOD_PERMISSIONS: Json[] = [allow({ PathPrefix: '/m/', Methods: ['GET', 'PUT'] })];
/** A header pattern holding a comma: no HAProxy ACL can match it exactly, so the agent decides. */
const COMMA_PERMISSIONS: Json[] = [
  allow({ PathExact: '/comma', Header: [header('x-c', { Exact: 'a,b' })] }),
  allow({ PathExact: '/comma-not', Header: [header('x-c', { Exact: 'a,b', Invert: true })] }),
];
const ORDERED: Json[] = [{ Action: 'deny', HTTP: { PathPrefix: '/admin' } }, allow({ PathPrefix: '/' })];
/** Two policies the agent decides (a comma pattern each) that both allow `GET /`: the `churn` source flips between them. */
const CHURN_A: Json[] = [{ Action: 'deny', HTTP: { PathPrefix: '/', Header: [header('x-c', { Exact: 'a,b' })] } }, allow({ PathPrefix: '/' })];
const CHURN_B: Json[] = [{ Action: 'deny', HTTP: { PathPrefix: '/', Header: [header('x-c', { Exact: 'c,d' })] } }, allow({ PathPrefix: '/' })];
/** No catch-all: a request neither permission matches gets the default policy. */
const WITH_DEFAULT: Json[] = [allow({ PathExact: '/only' }), { Action: 'deny', HTTP: { PathExact: '/no' } }];

/** Each source's intention on `api` (L4: `Action`; L7: `Permissions`). `ka`, `mv` and `churn` move during the tests. */
const sources: Record<string, Json> = {
  paths: { Permissions: [...PATH_PERMISSIONS, DENY_REST] },
  hdrs: { Permissions: [...HEADER_PERMISSIONS, DENY_REST] },
  methods: { Permissions: [...METHOD_PERMISSIONS, DENY_REST] },
  agent: { Permissions: [...COMMA_PERMISSIONS, ...PATH_PERMISSIONS, ...HEADER_PERMISSIONS, ...METHOD_PERMISSIONS, DENY_REST] },
  ordered: { Permissions: ORDERED },
  dflt: { Permissions: WITH_DEFAULT },
  l4allow: { Action: 'allow' },
  l4deny: { Action: 'deny' },
  ka: { Action: 'allow' },
  mv: { Action: 'allow' },
  churn: { Permissions: CHURN_A },
};
const RENDERED_SOURCES = ['paths', 'hdrs', 'methods', 'ordered', 'dflt'];
const LEAF_SOURCES = [...Object.keys(sources), 'nobody', 'bad'];

/** The L7 policy id haproxy-connect gives a source's permissions (a hash of them and the default). */
function policyId(permissions: Json[], defaultAllow: boolean): string {
  const parsed = parsePermissions(permissions);
  assert.equal(parsed.problem, undefined);
  return l7Policy(parsed.permissions, defaultAllow).id;
}

// ---------------------------------------------------------------------------------------------
// Processes.

interface Leaf {
  CertPEM: string;
  PrivateKeyPEM: string;
}

interface Mesh {
  consul: ConsulDevAgent;
  sidecar: SidecarProcess;
  port: number;
  roots: string;
  leaves: Map<string, Leaf>;
}

let baseDir: string;
let agent: ConsulDevAgent | undefined;
let aclAgent: ConsulDevAgent | undefined;
let aclStarting: Promise<ConsulDevAgent> | undefined;
let main: Mesh;
let secure: Mesh;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];

/** `name`'s app, service-defaults (http), `intentions` and sidecar on `consul`, with leaves for `leafSources`. */
async function startMesh(consul: ConsulDevAgent, name: string, intentions: Record<string, Json>, leafSources: readonly string[], sidecarArgs: string[] = []): Promise<Mesh> {
  const [appPort, sidecarPort] = (await freePorts(2)) as [number, number];
  apps.push(await startReportingHttpApp(name, appPort));
  await consul.put('/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
  // No protocol in the proxy's own Config: the agent resolves it from service-defaults.
  await registerMeshService(consul, { id: name, name, port: appPort, sidecarPort });
  const roots = (await consul.get<{ Roots: Array<{ RootCert: string }> }>('/v1/agent/connect/ca/roots')).Roots.map((r) => r.RootCert).join('\n');
  const leaves = new Map<string, Leaf>();
  for (const source of leafSources) leaves.set(source, await consul.get<Leaf>(`/v1/agent/connect/ca/leaf/${source}`));
  // Written before the sidecar starts: its first configuration already renders the policies.
  await writeIntentions(consul, name, intentions);
  const sidecar = await startReadySidecar(sidecars, name, consul.httpAddr, baseDir, sidecarArgs);
  return { consul, sidecar, port: sidecarPort, roots, leaves };
}

async function writeIntentions(consul: ConsulDevAgent, destination: string, entries: Record<string, Json>): Promise<void> {
  await consul.put('/v1/config', { Kind: 'service-intentions', Name: destination, Sources: Object.entries(entries).map(([Name, s]) => ({ Name, ...s })) });
}

const count = (sidecar: SidecarProcess, msg: string, from = 0): number => sidecar.logs.slice(from).filter((l) => l.msg === msg).length;

/** Whether the sidecar moved HAProxy's intentions epoch (a runtime apply) after log line `from`. */
const epochMoved = (sidecar: SidecarProcess, from: number): boolean =>
  sidecar.logs.slice(from).some((l) => l.msg === 'applied runtime changes' && (l.kinds as Record<string, number> | undefined)?.['set-intentions-epoch'] !== undefined);

/** Waits for a reload logged after log line `from`; the ms from `since` to when it was seen. */
const untilReloaded = (sidecar: SidecarProcess, what: string, from: number, since: number): Promise<number> =>
  waitFor(what, async () => (count(sidecar, 'haproxy reloaded', from) > 0 ? msSince(since) : undefined), APPLY_TIMEOUT_MS, 10);

async function runConfig(sidecar: SidecarProcess): Promise<string> {
  const dir = sidecar.find('created run directory')?.runDir;
  if (typeof dir !== 'string') throw new Error('no run directory logged');
  return readFile(join(dir, 'haproxy.cfg'), 'utf8');
}

/** The haproxy.cfg lines of policy `id`: its rules and the ACLs they use (for failure reports). */
function policyLines(cfg: string, id: string): string[] {
  const lines = cfg.split('\n').map((l) => l.trim());
  const rules = lines.filter((l) => l.includes(` ${id} `) || l.endsWith(` ${id}`));
  const acls = new Set(rules.flatMap((r) => [...r.matchAll(/!?(l7_\d+_\d+_\d+)/g)].map((m) => m[1] as string)));
  return [...lines.filter((l) => acls.has(/^acl (\S+)/.exec(l)?.[1] ?? '')), ...rules];
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client over mTLS: exact request bytes, keep-alive, responses parsed by length.

interface Request {
  method?: string;
  /** The request target, sent as is. */
  path: string;
  headers?: readonly Header[];
}

interface Answer {
  /** 0: no response (the reason is in `body`). */
  status: number;
  headers: Record<string, string[]>;
  body: string;
  report: HttpReport | undefined;
}

function requestText(req: Request): string {
  const method = req.method ?? 'GET';
  const body = ['PUT', 'POST'].includes(method.toUpperCase()) ? ['content-length: 0'] : [];
  return [`${method} ${req.path} HTTP/1.1`, 'host: api', ...(req.headers ?? []).map(([k, v]) => `${k}: ${v}`), ...body, '', ''].join('\r\n');
}

/** The request as a one-line string for messages. */
const shownRequest = (req: Request): string => JSON.stringify(requestText(req));

class MtlsConnection {
  readonly #socket: TLSSocket;
  #buffer = Buffer.alloc(0);
  #closed = false;
  #error = '';
  #wake: (() => void) | undefined;

  private constructor(socket: TLSSocket) {
    this.#socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, d]);
      this.#wake?.();
    });
    socket.on('error', (err) => {
      this.#error = err.message;
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  static open(mesh: Mesh, source: string): Promise<MtlsConnection> {
    const leaf = mesh.leaves.get(source);
    if (leaf === undefined) throw new Error(`no leaf for ${source}`);
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: mesh.port, ca: mesh.roots, cert: leaf.CertPEM, key: leaf.PrivateKeyPEM, checkServerIdentity: () => undefined });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TLS handshake with port ${mesh.port} as ${source} timed out`));
      }, REQUEST_TIMEOUT_MS);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(new MtlsConnection(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Closed by the peer (or by us). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends one request and reads exactly one response. */
  async request(req: Request): Promise<Answer> {
    if (this.#closed) return { status: 0, headers: {}, body: `error: the connection is closed ${this.#error}`, report: undefined };
    this.#socket.write(requestText(req));
    const deadline = Date.now() + REQUEST_TIMEOUT_MS;
    for (;;) {
      const parsed = this.#parse(req.method?.toUpperCase() === 'HEAD');
      if (parsed !== undefined) return parsed;
      if (this.#closed) return { status: 0, headers: {}, body: `error: closed after '${this.#buffer.toString().slice(0, 200)}' ${this.#error}`, report: undefined };
      const left = deadline - Date.now();
      if (left <= 0) return { status: 0, headers: {}, body: `error: no complete response within ${REQUEST_TIMEOUT_MS} ms ('${this.#buffer.toString().slice(0, 200)}')`, report: undefined };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** One complete response off the buffer, or undefined while it is incomplete. */
  #parse(head: boolean): Answer | undefined {
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine = '', ...lines] = this.#buffer.subarray(0, end).toString('latin1').split('\r\n');
    const headers: Record<string, string[]> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      headers[name] = [...(headers[name] ?? []), line.slice(colon + 1).trim()];
    }
    const status = Number(statusLine.split(' ')[1] ?? 0);
    let length: number;
    if (head || status === 204 || status === 304) length = 0;
    else if (headers['content-length'] !== undefined) length = Number(headers['content-length'][0]);
    else if (this.#closed) length = this.#buffer.length - end - 4;
    else return undefined;
    if (this.#buffer.length < end + 4 + length) return undefined;
    const body = this.#buffer.subarray(end + 4, end + 4 + length).toString();
    this.#buffer = this.#buffer.subarray(end + 4 + length);
    let report: HttpReport | undefined;
    try {
      const json = JSON.parse(body) as unknown;
      if (typeof json === 'object' && json !== null && typeof (json as Json).id === 'string') report = json as HttpReport;
    } catch {
      report = undefined;
    }
    return { status, headers, body, report };
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** One request on a new connection as `source`. */
async function send(mesh: Mesh, source: string, req: Request): Promise<Answer> {
  let conn: MtlsConnection;
  try {
    conn = await MtlsConnection.open(mesh, source);
  } catch (err) {
    return { status: 0, headers: {}, body: `error: ${(err as Error).message}`, report: undefined };
  }
  try {
    return await conn.request(req);
  } finally {
    conn.close();
  }
}

const shown = (a: Answer): string => `${a.status} ${JSON.stringify(a.body.slice(0, 160))}`;

/** Why `answer` is not `want` for `req` (undefined: it is). Allowed = the app's 200 for exactly this request; denied = 403 RBAC. */
function mismatch(req: Request, answer: Answer, want: Verdict): string | undefined {
  const head = req.method?.toUpperCase() === 'HEAD';
  if (want === 'deny') {
    if (answer.status === 403 && answer.body === (head ? '' : RBAC_DENIED_BODY)) return undefined;
    return `expected 403 '${RBAC_DENIED_BODY}', got ${shown(answer)}`;
  }
  if (answer.status !== 200) return `expected the app's 200, got ${shown(answer)}`;
  if (head) return undefined;
  if (answer.report?.method !== (req.method ?? 'GET') || answer.report.path !== req.path) return `expected the app to see ${req.method ?? 'GET'} ${req.path}, got ${shown(answer)}`;
  return undefined;
}

interface Case extends Request {
  want: Verdict;
}

/** Sends every case as `source` on its own connection; the list of mismatches (empty: all as expected). */
async function check(mesh: Mesh, source: string, cases: readonly Case[]): Promise<string[]> {
  const failures: string[] = [];
  for (const c of cases) {
    const problem = mismatch(c, await send(mesh, source, c), c.want);
    if (problem !== undefined) failures.push(`${source}: ${shownRequest(c)}: ${problem}`);
  }
  return failures;
}

/** Fails with the mismatches and the haproxy.cfg lines of the sources' policies. */
async function assertNoMismatch(mesh: Mesh, failures: readonly string[], policies: Record<string, string> = {}): Promise<void> {
  if (failures.length === 0) return;
  const cfg = await runConfig(mesh.sidecar);
  const lines = Object.entries(policies).flatMap(([source, id]) => [`--- haproxy.cfg lines of ${source}'s policy ${id}:`, ...policyLines(cfg, id)]);
  assert.fail([`${failures.length} request(s) not decided as expected:`, ...failures, ...lines].join('\n'));
}

/** Polls new connections as `source` until `req` gets `want`; the milliseconds since `since`. */
async function seen(mesh: Mesh, source: string, req: Request, want: Verdict, since: number): Promise<number> {
  let last = '';
  await waitFor(
    `${source}: ${shownRequest(req)} -> ${want}`,
    async () => {
      const answer = await send(mesh, source, req);
      last = shown(answer);
      return mismatch(req, answer, want) === undefined ? true : undefined;
    },
    APPLY_TIMEOUT_MS,
    10,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last answer: ${last}`);
  });
  return msSince(since);
}

/** Rewrites `api`'s intentions with `source` set to `intention`; the time the write started. */
async function move(source: string, intention: Json): Promise<number> {
  sources[source] = intention;
  const since = performance.now();
  await writeIntentions(main.consul, 'api', sources);
  return since;
}

// ---------------------------------------------------------------------------------------------
// Cases.

const h = (...headers: Header[]): { headers: Header[] } => ({ headers });

const PATH_CASES: Case[] = [
  { path: '/a', want: 'allow' },
  { path: '/ab', want: 'deny' },
  { path: '/a/', want: 'deny' },
  { path: '/a?x=1', want: 'allow' },
  { path: '/a?', want: 'allow' },
  { path: '/%61', want: 'deny' },
  { path: '/p/', want: 'allow' },
  { path: '/p/x/y', want: 'allow' },
  { path: '/p', want: 'deny' },
  { path: '/p?/p/', want: 'deny' },
  { path: '/p%2Fx', want: 'deny' },
  { path: '/p/%2F', want: 'allow' },
  { path: '/r/12', want: 'allow' },
  { path: '/r/12?x=abc', want: 'allow' },
  { path: '/r/12x', want: 'deny' },
  { path: '/x/r/12', want: 'deny' },
  { path: '/r/', want: 'deny' },
  { path: '/r?/r/1', want: 'deny' },
];

const HEADER_CASES: Case[] = [
  { path: '/present', ...h(['x-p', 'anything']), want: 'allow' },
  { path: '/present', ...h(['x-p', '']), want: 'allow' },
  { path: '/present', ...h(['X-P', '1'], ['x-p', '2']), want: 'allow' },
  { path: '/present', want: 'deny' },
  { path: '/exact', ...h(['x-e', '1']), want: 'allow' },
  { path: '/exact', ...h(['X-E', '1']), want: 'allow' },
  { path: '/exact', ...h(['x-e', '  1  ']), want: 'allow' },
  { path: '/exact', ...h(['x-e', '1'], ['x-e', '1']), want: 'deny' },
  { path: '/exact', ...h(['x-e', '11']), want: 'deny' },
  { path: '/exact', ...h(['x-e', '1,']), want: 'deny' },
  { path: '/exact', want: 'deny' },
  { path: '/exact?x-e=1', want: 'deny' },
  { path: '/prefix', ...h(['x-pre', 'abc']), want: 'allow' },
  { path: '/prefix', ...h(['x-pre', 'ab'], ['x-pre', 'zz']), want: 'allow' },
  { path: '/prefix', ...h(['x-pre', 'zz'], ['x-pre', 'ab']), want: 'deny' },
  { path: '/prefix', ...h(['x-pre', 'xab']), want: 'deny' },
  { path: '/prefix', want: 'deny' },
  { path: '/suffix', ...h(['x-suf', 'xyz']), want: 'allow' },
  { path: '/suffix', ...h(['x-suf', 'zz'], ['x-suf', 'yz']), want: 'allow' },
  { path: '/suffix', ...h(['x-suf', 'yz'], ['x-suf', 'zz']), want: 'deny' },
  { path: '/suffix', ...h(['x-suf', 'yzx']), want: 'deny' },
  { path: '/suffix', want: 'deny' },
  { path: '/regex', ...h(['x-re', '123']), want: 'allow' },
  { path: '/regex', ...h(['x-re', '12a']), want: 'deny' },
  { path: '/regex', ...h(['x-re', 'a12']), want: 'deny' },
  { path: '/regex', ...h(['x-re', '1'], ['x-re', '2']), want: 'deny' },
  { path: '/regex', ...h(['x-re', '']), want: 'deny' },
  { path: '/regex', want: 'deny' },
  { path: '/invert', ...h(['x-i', '2']), want: 'allow' },
  { path: '/invert', ...h(['x-i', '']), want: 'allow' },
  { path: '/invert', ...h(['x-i', '1']), want: 'deny' },
  { path: '/invert', ...h(['x-i', '1'], ['x-i', '1']), want: 'allow' },
  { path: '/invert', want: 'deny' },
  { path: '/absent', want: 'allow' },
  { path: '/absent', ...h(['x-other', '1']), want: 'allow' },
  { path: '/absent', ...h(['x-ip', '']), want: 'deny' },
  { path: '/absent', ...h(['x-ip', '1']), want: 'deny' },
];

const METHOD_CASES: Case[] = [
  { method: 'GET', path: '/m/x', want: 'allow' },
  { method: 'PUT', path: '/m/x', want: 'allow' },
  { method: 'POST', path: '/m/x', want: 'deny' },
  { method: 'HEAD', path: '/m/x', want: 'deny' },
  { method: 'get', path: '/m/x', want: 'deny' },
  { method: 'Get', path: '/m/x', want: 'deny' },
  { method: 'DELETE', path: '/m/x', want: 'deny' },
  { method: 'GET', path: '/m', want: 'deny' },
];

const COMMA_CASES: Case[] = [
  { path: '/comma', ...h(['x-c', 'a,b']), want: 'allow' },
  { path: '/comma', ...h(['x-c', 'a'], ['x-c', 'b']), want: 'allow' },
  { path: '/comma', ...h(['X-C', 'a'], ['x-c', 'b']), want: 'allow' },
  { path: '/comma?q=1', ...h(['x-c', 'a,b']), want: 'allow' },
  { path: '/comma', ...h(['x-c', 'a']), want: 'deny' },
  { path: '/comma', ...h(['x-c', 'b'], ['x-c', 'a']), want: 'deny' },
  { path: '/comma', ...h(['x-c', 'a, b']), want: 'deny' },
  { path: '/comma', ...h(['x-c', 'a,b'], ['x-c', 'c']), want: 'deny' },
  { path: '/comma', want: 'deny' },
  { path: '/comma-not', ...h(['x-c', 'a']), want: 'allow' },
  { path: '/comma-not', ...h(['x-c', 'a'], ['x-c', 'c']), want: 'allow' },
  { path: '/comma-not', ...h(['x-c', 'a'], ['x-c', 'b']), want: 'deny' },
  { path: '/comma-not', ...h(['x-c', 'a,b']), want: 'deny' },
  { path: '/comma-not', want: 'deny' },
];

const ORDERED_CASES: Case[] = [
  { path: '/admin', want: 'deny' },
  { path: '/admin/users', want: 'deny' },
  { path: '/administrator', want: 'deny' },
  { path: '/', want: 'allow' },
  { path: '/x/admin', want: 'allow' },
  { path: '/?/admin', want: 'allow' },
];

// ---------------------------------------------------------------------------------------------

before(async () => {
  baseDir = await mkdtemp(join(tmpdir(), 'hc-l7-intentions-'));
  // The ACL agent (default deny) starts meanwhile: it is only needed by its own test.
  const aclStarted = ConsulDevAgent.start({
    token: ROOT_TOKEN,
    extraConfig: `acl { enabled = true, default_policy = "deny", tokens { initial_management = "${ROOT_TOKEN}", agent = "${ROOT_TOKEN}" } }`,
  }).then((a) => {
    aclAgent = a;
    return a;
  });
  aclStarted.catch(() => {});
  aclStarting = aclStarted;
  agent = await ConsulDevAgent.start();
  main = await startMesh(agent, 'api', sources, LEAF_SOURCES);
  secure = await startMesh(await aclStarted, 'secure', { dflt: { Permissions: WITH_DEFAULT } }, ['dflt', 'nobody'], ['-token', ROOT_TOKEN]);
  // Applied once the last policy written decides.
  await seen(main, 'l4deny', { path: '/' }, 'deny', performance.now());
  await seen(main, 'agent', { path: '/comma', headers: [['x-c', 'a,b']] }, 'allow', performance.now());
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  // The ACL agent may still be starting when `before` failed early: wait for it, then stop it.
  await aclStarting?.catch(() => undefined);
  await Promise.all([agent?.stop(), aclAgent?.stop()]);
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('L7 intentions with real Consul and HAProxy, requests over mTLS to the public listener', () => {
  test('the public listener is HTTP (from service-defaults) and the exact policies are rendered as ACL chains', async () => {
    const cfg = await runConfig(main.sidecar);
    // Indentation free: the Data Plane API driver's file is written by the API in its own layout.
    assert.match(cfg, /frontend public_listener\n(?:[ \t]+.*\n)*?[ \t]+mode http\n/, 'the public listener must be in HTTP mode');
    for (const source of RENDERED_SOURCES) {
      const id = policyId((sources[source] as { Permissions: Json[] }).Permissions, true);
      assert.ok(cfg.includes(`-m str ${id} `), `${source}'s policy ${id} is not rendered:\n${cfg}`);
    }
  });

  test('paths: exact, prefix and regex (full match), on the raw path without its query', async () => {
    await assertNoMismatch(main, await check(main, 'paths', PATH_CASES), { paths: policyId(sources.paths?.Permissions as Json[], true) });
  });

  test('headers: present, exact, prefix, suffix, regex and invert; absent, empty and repeated (joined with ",")', async () => {
    await assertNoMismatch(main, await check(main, 'hdrs', HEADER_CASES), { hdrs: policyId(sources.hdrs?.Permissions as Json[], true) });
  });

  test('methods: GET and PUT allowed; POST, HEAD, DELETE and a lower-case get denied', async () => {
    await assertNoMismatch(main, await check(main, 'methods', METHOD_CASES), { methods: policyId(sources.methods?.Permissions as Json[], true) });
  });

  test('a deny permission before an allow: the first match decides', async () => {
    await assertNoMismatch(main, await check(main, 'ordered', ORDERED_CASES), { ordered: policyId(ORDERED, true) });
  });

  test('a header pattern with a comma: the agent decides each request, exactly as the rendered chains do', async () => {
    const id = policyId(sources.agent?.Permissions as Json[], true);
    const cfg = await runConfig(main.sidecar);
    assert.ok(!cfg.includes(id), `the comma policy ${id} must not be rendered:\n${policyLines(cfg, id).join('\n')}`);
    assert.ok(!cfg.includes('a,b'), 'no ACL may hold the pattern a,b');
    const decided = (): Array<Record<string, unknown>> => main.sidecar.logs.filter((l) => l.msg === 'request authorized');
    // The rendered policies never ask the agent.
    const beforeRendered = decided().length;
    assert.deepEqual(await check(main, 'paths', PATH_CASES.slice(0, 3)), []);
    assert.equal(decided().length, beforeRendered, 'a rendered policy asked the agent');

    const cases = [...COMMA_CASES, ...PATH_CASES, ...HEADER_CASES, ...METHOD_CASES];
    const mark = decided().length;
    await assertNoMismatch(main, await check(main, 'agent', cases), { agent: id });
    // The daemon logs a decision before it answers, but its stdout reaches this process on its own
    // pipe, after the answer sometimes: wait for the lines (bounded), then count them.
    await waitFor('the decisions logged', async () => (decided().length - mark >= cases.length ? true : undefined), 5_000, 20).catch(() => undefined);
    const asked = decided().slice(mark);
    // HEAD, POST and the lower-case methods too: every request of the connection is sent to the agent.
    assert.equal(asked.length, cases.length, `the agent decided ${asked.length} of ${cases.length} requests`);
    assert.ok(
      asked.every((l) => l.reason === `policy ${id}`),
      JSON.stringify(asked.find((l) => l.reason !== `policy ${id}`)),
    );
    assert.equal(asked.filter((l) => l.allowed === true).length, cases.filter((c) => c.want === 'allow').length);
  });

  test('the default policy decides what no permission matches: allow without ACLs, deny with ACL default deny', async () => {
    await assertNoMismatch(
      main,
      await check(main, 'dflt', [
        { path: '/only', want: 'allow' },
        { path: '/no', want: 'deny' },
        { path: '/other', want: 'allow' },
        { path: '/only/x', want: 'allow' },
      ]),
      { dflt: policyId(WITH_DEFAULT, true) },
    );
    await assertNoMismatch(
      secure,
      [
        ...(await check(secure, 'dflt', [
          { path: '/only', want: 'allow' },
          { path: '/no', want: 'deny' },
          { path: '/other', want: 'deny' },
          { path: '/only/x', want: 'deny' },
        ])),
        // No intention at all: the default, deny.
        ...(await check(secure, 'nobody', [{ path: '/only', want: 'deny' }])),
      ],
      { dflt: policyId(WITH_DEFAULT, false) },
    );
    const cfg = await runConfig(secure.sidecar);
    assert.ok(cfg.includes(`-m str ${policyId(WITH_DEFAULT, false)} `), 'the default-deny policy is rendered');
  });

  test('L4 intentions on the HTTP listener are decided per request: allow 200, deny 403', async () => {
    await assertNoMismatch(main, [
      ...(await check(main, 'l4allow', [
        { path: '/', want: 'allow' },
        { path: '/admin', want: 'allow' },
        { method: 'POST', path: '/x?y', want: 'allow' },
      ])),
      ...(await check(main, 'l4deny', [
        { path: '/', want: 'deny' },
        { method: 'PUT', path: '/a', want: 'deny' },
      ])),
      // No intention: the dev agent's default, allow.
      ...(await check(main, 'nobody', [{ path: '/anything', want: 'allow' }])),
    ]);
  });

  test('an intention change reaches the next request of an open keep-alive connection, which stays open', async () => {
    const sidecar = main.sidecar;
    const conn = await MtlsConnection.open(main, 'ka');
    const steps: string[] = [];
    const timings: string[] = [];
    try {
      const expect = async (what: string, req: Request, want: Verdict): Promise<void> => {
        const answer = await conn.request(req);
        const problem = mismatch(req, answer, want);
        steps.push(`${what}: ${shownRequest(req)} -> ${shown(answer)}`);
        assert.equal(problem, undefined, `${what}: ${problem}\n${steps.join('\n')}`);
        assert.ok(!(answer.headers.connection ?? []).some((v) => /close/i.test(v)), `${what}: the proxy announced connection: close\n${steps.join('\n')}`);
        assert.ok(!conn.closed, `${what}: the proxy closed the connection\n${steps.join('\n')}`);
      };
      /**
       * Writes `intention` for ka and waits until it is applied: new connections get `want` for
       * `req`, and HAProxy's intentions epoch moved (the runtime op that makes open connections ask
       * again). Both times are kept for the note.
       */
      const change = async (what: string, intention: Json, req: Request, want: Verdict): Promise<void> => {
        const mark = sidecar.logs.length;
        const since = await move('ka', intention);
        const newMs = await seen(main, 'ka', req, want, since);
        const epochMs = await waitFor('the new intentions epoch in HAProxy', async () => (epochMoved(sidecar, mark) ? msSince(since) : undefined), APPLY_TIMEOUT_MS, 5);
        timings.push(`${what}: new connections ${newMs} ms, epoch moved ${epochMs} ms`);
      };
      await expect('allowed at first', { path: '/admin' }, 'allow');

      await change('allow -> deny', { Action: 'deny' }, { path: '/admin' }, 'deny');
      await expect('after allow -> deny', { path: '/admin' }, 'deny');
      await expect('still denied', { path: '/' }, 'deny');

      await change('deny -> allow', { Action: 'allow' }, { path: '/admin' }, 'allow');
      await expect('after deny -> allow', { path: '/admin' }, 'allow');

      // An L7 policy that is already rendered (the `ordered` source's).
      await change('allow -> L7', { Permissions: ORDERED }, { path: '/admin' }, 'deny');
      await expect('after allow -> L7', { path: '/admin' }, 'deny');
      await expect('after allow -> L7', { path: '/' }, 'allow');

      await change('L7 -> allow', { Action: 'allow' }, { path: '/admin' }, 'allow');
      await expect('after L7 -> allow', { path: '/admin' }, 'allow');
      console.log(`keep-alive connection: ${steps.length} requests on one connection, all as expected; ${timings.join('; ')}`);
    } finally {
      conn.close();
    }
  });

  test('an agent-decided policy changed under keep-alive traffic: no request that the old and the new policy both allow is refused', async () => {
    const sidecar = main.sidecar;
    const CHANGES = 10;
    const conns = await Promise.all([1, 2].map(() => MtlsConnection.open(main, 'churn')));
    let running = true;
    let requests = 0;
    let closedEarly = 0;
    const refused: Array<{ at: number; text: string }> = [];
    const load = conns.map(async (conn) => {
      while (running && !conn.closed) {
        const answer = await conn.request({ path: '/' });
        requests++;
        if (answer.status !== 200) refused.push({ at: Date.now(), text: `request ${requests} at ${new Date().toISOString()}: ${shown(answer)}` });
      }
    });
    try {
      for (let i = 0; i < CHANGES; i++) {
        const mark = sidecar.logs.length;
        await move('churn', { Permissions: i % 2 === 0 ? CHURN_B : CHURN_A });
        await waitFor(`change ${i + 1}: the new intentions epoch in HAProxy`, async () => epochMoved(sidecar, mark) || undefined, APPLY_TIMEOUT_MS, 5);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      running = false;
      await Promise.all(load);
      closedEarly = conns.filter((c) => c.closed).length;
      for (const conn of conns) conn.close();
    }
    assert.ok(requests >= 100, `only ${requests} requests ran through the changes`);
    // What the daemon logged within 30 ms of a refusal, but the agent's allowing decisions (debug lines).
    const around = (at: number): string[] =>
      sidecar.logs
        .filter((l) => typeof l.time === 'string' && Math.abs(Date.parse(l.time) - at) <= 30 && (l.msg !== 'request authorized' || l.allowed !== true))
        .map((l) => JSON.stringify(l).slice(0, 400));
    assert.deepEqual(
      refused.slice(0, 5).map((r) => r.text),
      [],
      `${refused.length} of ${requests} requests refused through ${CHANGES} changes; the daemon around the first:\n${refused[0] === undefined ? '' : around(refused[0].at).join('\n')}`,
    );
    assert.equal(closedEarly, 0, 'a connection was closed during the changes');
    console.log(`agent-decided policy changed ${CHANGES} times under keep-alive traffic: ${requests} requests on 2 connections, none refused`);
  });

  test('reloads: moving a source between allow, deny and an existing L7 policy reloads nothing; new rules reload once', async () => {
    const sidecar = main.sidecar;
    const mark = sidecar.logs.length;
    const moves: Array<[string, Json, Request, Verdict]> = [
      ['allow -> deny', { Action: 'deny' }, { path: '/' }, 'deny'],
      ['deny -> L7 (rendered)', { Permissions: ORDERED }, { path: '/' }, 'allow'],
      ['L7 -> deny', { Action: 'deny' }, { path: '/' }, 'deny'],
      ['deny -> allow', { Action: 'allow' }, { path: '/admin' }, 'allow'],
      ['allow -> L7 (rendered)', { Permissions: ORDERED }, { path: '/admin' }, 'deny'],
      ['L7 -> allow', { Action: 'allow' }, { path: '/admin' }, 'allow'],
    ];
    const timings: string[] = [];
    for (const [what, intention, req, want] of moves) {
      const since = await move('mv', intention);
      timings.push(`${what} ${await seen(main, 'mv', req, want, since)} ms`);
    }
    await new Promise((r) => setTimeout(r, RELOAD_SETTLE_MS));
    const runtimeReloads = count(sidecar, 'reloading haproxy', mark);
    console.log(`intention moves without new rules: ${timings.join(', ')}; reloads: ${runtimeReloads}`);
    assert.equal(runtimeReloads, 0, `moving a source between allow, deny and an existing L7 policy reloaded haproxy ${runtimeReloads} time(s)`);

    // New rules: a policy no source had.
    const fresh: Json[] = [{ Action: 'deny', HTTP: { PathPrefix: '/fresh' } }, allow({ PathPrefix: '/' })];
    const id = policyId(fresh, true);
    const reloadMark = sidecar.logs.length;
    // A connection kept alive across the change gets the new decision before the reload is live.
    const kept = await MtlsConnection.open(main, 'mv');
    assert.equal((await kept.request({ path: '/fresh/x' })).status, 200);
    const since = await move('mv', { Permissions: fresh });
    const freshMs = await seen(main, 'mv', { path: '/fresh/x' }, 'deny', since);
    const keptMs = await waitFor(
      'the kept-alive connection to see the new rules',
      async () => ((await kept.request({ path: '/fresh/x' })).status === 403 ? msSince(since) : undefined),
      APPLY_TIMEOUT_MS,
      5,
    );
    kept.close();
    const reloaded = await untilReloaded(sidecar, 'the reload with the new rules', reloadMark, since);
    await new Promise((r) => setTimeout(r, RELOAD_SETTLE_MS));
    const reloads = sidecar.logs.slice(reloadMark).filter((l) => l.msg === 'reloading haproxy');
    console.log(
      `a permission change with new rules: decision seen after ${freshMs} ms, haproxy reloaded after ${reloaded} ms; reloads: ${reloads.length} (${JSON.stringify(reloads.map((l) => l.reasons))})`,
    );
    assert.equal(reloads.length, 1, `expected exactly one reload, got ${reloads.length}`);
    console.log(`the kept-alive connection saw the new rules after ${keptMs} ms`);
    // The intentions epoch moved at once, not with the reload: open connections never mix answers.
    const order = sidecar.logs
      .slice(reloadMark)
      .map((l) => l.msg)
      .filter((m) => m === 'applied the changes that need no reload before the reload' || m === 'reloading haproxy');
    assert.deepEqual(order.slice(0, 2), ['applied the changes that need no reload before the reload', 'reloading haproxy']);
    const cfg = await runConfig(sidecar);
    assert.ok(cfg.includes(`-m str ${id} `), `the new policy ${id} is rendered after the reload`);
    // Rendered now: the agent is not asked any more.
    const asked = count(sidecar, 'request authorized');
    await assertNoMismatch(
      main,
      await check(main, 'mv', [
        { path: '/fresh', want: 'deny' },
        { path: '/freshly', want: 'deny' },
        { path: '/', want: 'allow' },
        { path: '/admin', want: 'allow' },
      ]),
      { mv: id },
    );
    assert.equal(count(sidecar, 'request authorized'), asked, 'a rendered policy asked the agent');
  });

  test('a reload keeps an idle keep-alive connection on the old worker, and an intention change made after the reload still reaches its next request', async () => {
    const sidecar = main.sidecar;
    const conn = await MtlsConnection.open(main, 'ka');
    try {
      assert.equal((await conn.request({ path: '/' })).status, 200, 'ka is allowed at first');
      // A reload that changes no intention (the mesh entry): the old worker keeps the epoch under
      // which `ka`'s session was allowed, and the connection stays idle meanwhile.
      const reloadMark = sidecar.logs.length;
      const since = performance.now();
      await main.consul.put('/v1/config', { Kind: 'mesh', HTTP: { SanitizeXForwardedClientCert: true } });
      const reloadedMs = await untilReloaded(sidecar, 'the reload for the mesh entry', reloadMark, since);
      await new Promise((r) => setTimeout(r, 300));
      // Closed at once, a request sent on it at that moment would fail (the 502s of a reload).
      assert.ok(!conn.closed, 'the old worker closed the idle keep-alive connection at the reload');

      // The epoch changes in the new worker only; the old one must ask the agent again.
      const epochMark = sidecar.logs.length;
      const denySince = await move('ka', { Action: 'deny' });
      await seen(main, 'ka', { path: '/' }, 'deny', denySince);
      await waitFor('the new intentions epoch', async () => epochMoved(sidecar, epochMark) || undefined, APPLY_TIMEOUT_MS, 5);
      const answer = await conn.request({ path: '/' });
      assert.equal(mismatch({ path: '/' }, answer, 'deny'), undefined, `the old worker decided with the verdict it held before the change: ${shown(answer)}`);
      assert.ok(
        (answer.headers.connection ?? []).some((v) => /close/i.test(v)),
        `the request did not reach the old worker (no connection: close): ${JSON.stringify(answer.headers)}`,
      );
      console.log(`idle connection on the old worker: reload after ${reloadedMs} ms; its next request, after a deny written later, refused (${answer.status})`);
    } finally {
      conn.close();
      await move('ka', { Action: 'allow' });
      const mark = sidecar.logs.length;
      const deleteSince = performance.now();
      const res = await main.consul.fetch('/v1/config/mesh/mesh', { method: 'DELETE' });
      assert.ok(res.ok, `DELETE the mesh entry: ${res.status}`);
      // The next tests start after that reload, not during it.
      await untilReloaded(sidecar, 'the reload without the mesh entry', mark, deleteSince);
      await new Promise((r) => setTimeout(r, RELOAD_SETTLE_MS));
    }
  });

  test('a permission whose regex RE2 refuses: the source is denied and the sidecar names the intention and the regex once', async () => {
    const pattern = '/x(?=y).*';
    const entry: Record<string, Json> = { ...sources, bad: { Permissions: [allow({ PathRegex: pattern })] } };
    const sidecar = main.sidecar;
    const mark = sidecar.logs.length;
    assert.deepEqual(await check(main, 'bad', [{ path: '/xy', want: 'allow' }]), [], 'without an intention, bad gets the default, allow');
    const res = await agent?.fetch('/v1/config', {
      method: 'PUT',
      body: JSON.stringify({ Kind: 'service-intentions', Name: 'api', Sources: Object.entries(entry).map(([Name, s]) => ({ Name, ...s })) }),
    });
    const text = (await res?.text()) ?? '';
    if (res?.ok !== true) {
      console.log(`Consul 1.16.2 refused the intention with PathRegex ${pattern} at write time: ${res?.status} ${text}`);
      assert.match(text, /regex|PathRegex|(\?=)/i);
      return;
    }
    console.log(`Consul 1.16.2 accepted the intention with PathRegex ${pattern}`);
    const deniedMs = await seen(main, 'bad', { path: '/xy' }, 'deny', performance.now());
    await assertNoMismatch(main, [
      ...(await check(main, 'bad', [
        { path: '/xyz', want: 'deny' },
        { path: '/', want: 'deny' },
      ])),
      // The other intentions are untouched.
      ...(await check(main, 'paths', PATH_CASES.slice(0, 2))),
    ]);
    // Another change while it stays: still one line.
    entry.mv = { Action: 'deny' };
    await writeIntentions(main.consul, 'api', entry);
    await seen(main, 'mv', { path: '/' }, 'deny', performance.now());
    const lines = sidecar.logs.slice(mark).filter((l) => l.msg === 'intention cannot be enforced: it denies every source it matches');
    console.log(`the refused regex: bad denied ${deniedMs} ms after the write returned; log: ${JSON.stringify(lines)}`);
    assert.equal(lines.length, 1, JSON.stringify(lines));
    const line = lines[0] as Record<string, unknown>;
    assert.match(String(line.intention), /\/bad => default\/api/);
    assert.ok(String(line.reason).includes(JSON.stringify(pattern)), String(line.reason));
  });

  test("X-Forwarded-Client-Cert: Envoy's element appended to what came in; the mesh entry's SanitizeXForwardedClientCert removes it", async () => {
    const leaf = main.leaves.get('l4allow');
    assert.ok(leaf !== undefined && agent !== undefined);
    const consul = agent;
    const { TrustDomain } = await consul.get<{ TrustDomain: string }>('/v1/agent/connect/ca/roots');
    const element = xfccElement(new X509Certificate(leaf.CertPEM).raw, `spiffe://${TrustDomain}/ns/default/dc/dc1/svc/api`);
    const xfccSeen = async (headers: readonly Header[] = []) => {
      const answer = await send(main, 'l4allow', { path: '/xfcc', headers });
      assert.equal(answer.status, 200, answer.body);
      return answer.report?.headers['x-forwarded-client-cert'];
    };
    assert.deepEqual(await xfccSeen(), [element]);
    assert.deepEqual(await xfccSeen([['x-forwarded-client-cert', 'By=spiffe://x;URI=spiffe://forged']]), [`By=spiffe://x;URI=spiffe://forged,${element}`]);
    assert.deepEqual(
      await xfccSeen([
        ['X-Forwarded-Client-Cert', 'a'],
        ['x-forwarded-client-cert', 'b'],
      ]),
      [element],
      'sent twice: the element alone (HAProxy cannot join the lines)',
    );
    // The mesh entry: sanitized after a reload, back when the entry goes.
    await consul.put('/v1/config', { Kind: 'mesh', HTTP: { SanitizeXForwardedClientCert: true } });
    try {
      const since = performance.now();
      await waitFor('XFCC sanitized', async () => ((await xfccSeen([['x-forwarded-client-cert', 'forged']])) === undefined ? true : undefined), APPLY_TIMEOUT_MS, 50);
      console.log(`XFCC: SanitizeXForwardedClientCert applied ${Math.round(performance.now() - since)} ms after the write`);
    } finally {
      const res = await consul.fetch('/v1/config/mesh/mesh', { method: 'DELETE' });
      assert.ok(res.ok, `DELETE the mesh entry: ${res.status}`);
    }
    await waitFor('XFCC appended again', async () => ((await xfccSeen())?.[0] === element ? true : undefined), APPLY_TIMEOUT_MS, 50);
  });
});
