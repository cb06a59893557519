/**
 * Referential integrity and value checks of an HAProxy model, before anything reaches HAProxy.
 * Render relies on these checks: every value it writes unquoted into haproxy.cfg has passed one
 * of the patterns below, so no value can inject a keyword, a newline or a second argument.
 * Pure (node:net's isIP is a parser, not I/O).
 */
import { isIP } from 'node:net';
import { HaproxyConnectError, isHaproxyConnectError } from '../errors.js';
import type { Backend, Bind, Frontend, HashKeyPart, HaproxyModel, ModelFile, Server } from './model.js';
import { MAX_TEMPLATE_HEADERS } from '../domain/access-log-template.js';
import { exposePathProblem } from '../domain/expose.js';
import { checkBackendRoutes, checkFrontendRoutes } from './validate-routes.js';
import { HAPROXY_NAME_PATTERN, PLAIN_PATH_CHARACTERS, isPlainAbsolutePath, runDirPath } from '../domain/haproxy-names.js';

/** Run-directory file names: one path component, no dot-only names. */
const FILE_NAME_PATTERN = /^(?!\.{1,2}$)[A-Za-z0-9_.-]+$/;
/** Absolute paths rendered unquoted: no whitespace, quotes, '#' or backslashes. */
/** RFC 1123 host name (labels of letters, digits and inner hyphens), optional trailing dot. */
const HOSTNAME_PATTERN = /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** ALPN protocol ids as HAProxy takes them in a comma-separated list, e.g. `h2`, `http/1.1`. */
const ALPN_PATTERN = /^[A-Za-z0-9._/-]+$/;
/** Header, cookie and query parameter names a hash key may read: plain enough to go unquoted in a sample fetch. */
export const HASH_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,128}$/;
/** A SPIFFE ID as Consul writes it into leaves; at most 255 bytes (a two-byte DER length). */
const PEER_IDENTITY_PATTERN = /^spiffe:\/\/[A-Za-z0-9._/-]{1,240}$/;
/** A bound on `balance random(<draws>)`: more draws than servers only costs time. */
const MAX_RANDOM_DRAWS = 64;
/** sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_UNIX_SOCKET_PATH_BYTES = 107;
/** HAProxy stores timeouts as signed 32-bit milliseconds. */
const MAX_TIMEOUT_MS = 2_147_483_647;
const MAX_PORT = 65_535;
const MAX_WEIGHT = 256;
const MAX_FILE_MODE = 0o777;
/** HAProxy's build-time thread limit on 64-bit Linux packages. */
const MAX_NBTHREAD = 64;
const WILDCARD_ADDRESSES: ReadonlySet<string> = new Set(['0.0.0.0', '::', '*']);

const INVALID_PREFIX = 'Invalid HAProxy model: ';

function invalid(message: string): never {
  throw new HaproxyConnectError('MODEL_INVALID', `${INVALID_PREFIX}${message}`);
}

function show(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

function checkInteger(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(`${what} must be an integer in ${min}..${max}, got ${show(value)}`);
  }
}

function checkName(what: string, name: string): void {
  if (!HAPROXY_NAME_PATTERN.test(name)) invalid(`${what} ${show(name)} must match ${HAPROXY_NAME_PATTERN}`);
}

function checkFileName(what: string, name: string): void {
  if (!FILE_NAME_PATTERN.test(name)) invalid(`${what} ${show(name)} must be a plain file name matching ${FILE_NAME_PATTERN}`);
}

function checkAbsolutePath(what: string, path: string): void {
  if (!isPlainAbsolutePath(path)) {
    invalid(`${what} ${show(path)} must be an absolute path of ${PLAIN_PATH_CHARACTERS} without '..'`);
  }
}

function checkUnixSocketPath(what: string, path: string): void {
  checkAbsolutePath(what, path);
  const bytes = new TextEncoder().encode(path).length;
  if (bytes > MAX_UNIX_SOCKET_PATH_BYTES) {
    invalid(`${what} ${show(path)} is ${bytes} bytes long; unix socket paths are limited to ${MAX_UNIX_SOCKET_PATH_BYTES}`);
  }
}

/** An IPv4 or IPv6 literal (no brackets) or a host name. */
export function isValidAddress(address: string): boolean {
  return isIP(address) !== 0 || HOSTNAME_PATTERN.test(address);
}

function checkAddress(what: string, address: string): void {
  if (!isValidAddress(address)) invalid(`${what} ${show(address)} is not an IPv4 or IPv6 address or a host name`);
}

function checkTimeout(what: string, ms: number): void {
  checkInteger(what, ms, 1, MAX_TIMEOUT_MS);
}

function checkAlpn(what: string, alpn: readonly string[] | undefined): void {
  if (alpn === undefined) return;
  if (alpn.length === 0) invalid(`${what} ALPN list is empty (use undefined for none)`);
  for (const protocol of alpn) {
    if (!ALPN_PATTERN.test(protocol)) invalid(`${what} ALPN protocol ${show(protocol)} must match ${ALPN_PATTERN}`);
  }
}

function checkFileExists(what: string, name: string, files: ReadonlyMap<string, ModelFile>): void {
  checkFileName(what, name);
  if (!files.has(name)) invalid(`${what} ${show(name)} is not among the model's files`);
}

/** The crt-list's certificates and ca-files must be model files too, or HAProxy will not find them. */
function checkCrtListReferences(crtList: ModelFile, files: ReadonlyMap<string, ModelFile>): void {
  for (const rawLine of crtList.content.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [crtFile] = line.split(/\s+/);
    if (crtFile !== undefined) checkFileExists(`crt-list ${show(crtList.name)} certificate`, crtFile, files);
    for (const match of line.matchAll(/\b(?:ca-file|ca-verify-file|crl-file)\s+(\S+?)(?=[\s\]]|$)/g)) {
      const referenced = match[1];
      if (referenced !== undefined) checkFileExists(`crt-list ${show(crtList.name)} reference`, referenced, files);
    }
  }
}

/** Two inet binds conflict on the same port when their addresses are equal or one is a wildcard. */
function bindKey(bind: Bind): string {
  return bind.kind === 'unix' ? `unix:${bind.path}` : `inet:${bind.address}:${bind.port}`;
}

/** Whether two binds would take the same socket (same path, or the same port on equal or wildcard addresses). */
export function bindsConflict(a: Bind, b: Bind): boolean {
  if (a.kind === 'unix' || b.kind === 'unix') return bindKey(a) === bindKey(b);
  if (a.port !== b.port) return false;
  return a.address === b.address || WILDCARD_ADDRESSES.has(a.address) || WILDCARD_ADDRESSES.has(b.address);
}

function checkBindConflicts(frontends: readonly Frontend[]): void {
  const seen = new Map<string, string>();
  const inetByPort = new Map<number, Array<{ address: string; frontend: string }>>();
  for (const frontend of frontends) {
    const key = bindKey(frontend.bind);
    const other = seen.get(key);
    if (other !== undefined) invalid(`frontends ${show(other)} and ${show(frontend.name)} both bind ${key}`);
    seen.set(key, frontend.name);
    if (frontend.bind.kind !== 'inet') continue;
    const { address, port } = frontend.bind;
    const onPort = inetByPort.get(port) ?? [];
    for (const existing of onPort) {
      if (WILDCARD_ADDRESSES.has(existing.address) || WILDCARD_ADDRESSES.has(address)) {
        invalid(`frontends ${show(existing.frontend)} (${existing.address}) and ${show(frontend.name)} (${address}) overlap on port ${port}`);
      }
    }
    onPort.push({ address, frontend: frontend.name });
    inetByPort.set(port, onPort);
  }
}

export function checkBind(frontend: Frontend): void {
  const what = `frontend ${show(frontend.name)} bind`;
  if (frontend.bind.kind === 'inet') {
    checkAddress(`${what} address`, frontend.bind.address);
    checkInteger(`${what} port`, frontend.bind.port, 1, MAX_PORT);
  } else {
    checkUnixSocketPath(`${what} path`, frontend.bind.path);
    if (frontend.bind.mode !== undefined) checkInteger(`${what} mode`, frontend.bind.mode, 0, MAX_FILE_MODE);
  }
}

export function checkFrontend(frontend: Frontend, backends: ReadonlyMap<string, Backend>, files: ReadonlyMap<string, ModelFile>): void {
  const what = `frontend ${show(frontend.name)}`;
  checkBind(frontend);
  checkTimeout(`${what} timeout client`, frontend.timeoutClientMs);
  if (frontend.timeoutHttpRequestMs !== undefined) {
    if (frontend.mode !== 'http') invalid(`${what} sets timeout http-request in mode ${frontend.mode}`);
    checkTimeout(`${what} timeout http-request`, frontend.timeoutHttpRequestMs);
  }
  if (frontend.keepIdleThroughReload === true && frontend.mode !== 'http') invalid(`${what} keeps idle connections through a reload in mode ${frontend.mode}`);
  if (frontend.maxconn !== undefined) checkInteger(`${what} maxconn`, frontend.maxconn, 1, MAX_TIMEOUT_MS);
  if (frontend.tls !== undefined) {
    const crtList = files.get(frontend.tls.crtList);
    checkFileExists(`${what} crt-list`, frontend.tls.crtList, files);
    if (crtList !== undefined) checkCrtListReferences(crtList, files);
    checkAlpn(what, frontend.tls.alpn);
  }
  if (frontend.spoe !== undefined) checkSpoe(what, frontend, files);
  const backend = backends.get(frontend.defaultBackend);
  if (backend === undefined) invalid(`${what} default_backend ${show(frontend.defaultBackend)} does not exist`);
  // An HTTP frontend cannot hand streams to a TCP backend (HAProxy refuses the config).
  if (frontend.mode === 'http' && backend.mode !== 'http') {
    invalid(`${what} is mode http but its default_backend ${show(backend.name)} is mode ${backend.mode}`);
  }
  for (const name of frontend.failoverBackends ?? []) {
    const tier = backends.get(name);
    if (tier === undefined) invalid(`${what} fails over to backend ${show(name)}, which does not exist`);
    if (tier.mode !== frontend.mode) invalid(`${what} is mode ${frontend.mode} but fails over to backend ${show(name)} in mode ${tier.mode}`);
  }
  checkFrontendRoutes(frontend, backends);
  if (frontend.exposedPaths !== undefined) {
    if (frontend.mode !== 'http') invalid(`${what} exposes paths in mode ${frontend.mode}`);
    if (frontend.exposedPaths.length === 0) invalid(`${what} exposes an empty list of paths`);
    for (const path of frontend.exposedPaths) {
      const problem = exposePathProblem(path);
      if (problem !== undefined) invalid(`${what} exposed path ${show(path)} ${problem}`);
    }
  }
  if (frontend.splitsMapFile !== undefined) checkFileName(`${what} splits map`, frontend.splitsMapFile);
  if (frontend.hashKey !== undefined && frontend.hashKey.length > 0) {
    if (frontend.mode !== 'http') invalid(`${what} sets a hash key in mode ${frontend.mode}`);
    checkHashKey(what, frontend.hashKey);
  }
  for (const [k, route] of (frontend.routes ?? []).entries()) {
    checkTimeout(`${what} route ${k} timeout`, route.timeoutServerMs);
    checkHashKey(`${what} route ${k}`, route.hashKey);
  }
}

/** The header, cookie and query parameter names a consistent-hash key reads. */
function checkHashKey(what: string, parts: readonly HashKeyPart[]): void {
  for (const part of parts) {
    if (part.sample.kind !== 'source_ip' && !HASH_NAME_PATTERN.test(part.sample.name)) {
      invalid(`${what} hash key ${part.sample.kind} name ${show(part.sample.name)} must match ${HASH_NAME_PATTERN}`);
    }
  }
}

/**
 * Values written literally inside the access log's double-quoted `log-format` (access-log-wire.ts):
 * no quote, backslash, `%`, space or `,`.
 */
const LOG_CLUSTER_PATTERN = /^[A-Za-z0-9_.-]{1,253}$/;
const LOG_REQUEST_HEADER_PATTERN = /^(?::method|:path|:authority|[a-z0-9_-]{1,64})$/;
const LOG_RESPONSE_HEADER_PATTERN = /^[a-z0-9_-]{1,64}$/;

function checkHeaders(what: string, headers: readonly string[], pattern: RegExp): void {
  const seen = new Set<string>();
  for (const header of headers) {
    if (!pattern.test(header)) invalid(`${what} ${show(header)} must match ${pattern}`);
    if (seen.has(header)) invalid(`${what} ${show(header)} is listed twice`);
    seen.add(header);
  }
}

export function checkAccessLog(frontend: Frontend, global: HaproxyModel['global']): void {
  const log = frontend.accessLog;
  if (log === undefined) return;
  const what = `frontend ${show(frontend.name)} access log`;
  if (global.logs === undefined) invalid(`${what} needs a log receiver (global logs)`);
  if (!LOG_CLUSTER_PATTERN.test(log.cluster)) invalid(`${what} cluster ${show(log.cluster)} must match ${LOG_CLUSTER_PATTERN}`);
  if (frontend.mode !== 'http' && log.requestHeaders.length + log.responseHeaders.length > 0) {
    invalid(`${what} captures headers in mode ${frontend.mode}`);
  }
  checkHeaders(`${what} request header`, log.requestHeaders, LOG_REQUEST_HEADER_PATTERN);
  checkHeaders(`${what} response header`, log.responseHeaders, LOG_RESPONSE_HEADER_PATTERN);
  const count = log.requestHeaders.length + log.responseHeaders.length;
  if (count > MAX_TEMPLATE_HEADERS) invalid(`${what} captures ${count} headers; at most ${MAX_TEMPLATE_HEADERS}`);
}

/** SPOE engine ids and variable-like names: HAProxy accepts [A-Za-z0-9_.-]. */
const SPOE_ENGINE_PATTERN = /^[A-Za-z0-9_.-]+$/;

function checkSpoe(what: string, frontend: Frontend, files: ReadonlyMap<string, ModelFile>): void {
  const spoe = frontend.spoe;
  if (spoe === undefined) return;
  if (!SPOE_ENGINE_PATTERN.test(spoe.engine)) invalid(`${what} SPOE engine ${show(spoe.engine)} must match ${SPOE_ENGINE_PATTERN}`);
  checkFileExists(`${what} SPOE config`, spoe.configFile, files);
  checkFileExists(`${what} intentions epoch map`, spoe.epochMapFile, files);
  checkName(`${what} SPOE agent backend`, spoe.agentBackend);
  checkFileName(`${what} SPOE agent socket`, spoe.agentSocket);
  checkTimeout(`${what} tcp-request inspect-delay`, spoe.inspectDelayMs);
  checkTimeout(`${what} SPOE agent timeout connect`, spoe.agentConnectTimeoutMs);
  checkTimeout(`${what} SPOE agent timeout server`, spoe.agentServerTimeoutMs);
}

export function checkBackend(backend: Backend, files: ReadonlyMap<string, ModelFile>): void {
  const what = `backend ${show(backend.name)}`;
  checkTimeout(`${what} timeout connect`, backend.timeoutConnectMs);
  checkTimeout(`${what} timeout server`, backend.timeoutServerMs);
  if (backend.httpReuse !== undefined && backend.mode !== 'http') invalid(`${what} sets http-reuse in mode ${backend.mode}`);
  if (backend.protoH2 && backend.mode !== 'http') invalid(`${what} uses proto h2 in mode ${backend.mode}`);
  if (backend.peerIdentity !== undefined) {
    if (backend.mode !== 'http' || backend.tls === undefined) invalid(`${what} checks the peer identity without HTTP over TLS`);
    if (!PEER_IDENTITY_PATTERN.test(backend.peerIdentity)) invalid(`${what} peer identity ${show(backend.peerIdentity)} must match ${PEER_IDENTITY_PATTERN}`);
  }
  checkBackendRoutes(backend);
  checkBackendLimits(what, backend);
  if (typeof backend.balance === 'object') checkInteger(`${what} balance random draws`, backend.balance.random, 1, MAX_RANDOM_DRAWS);
  if (backend.balance === 'hash' && backend.mode !== 'http') invalid(`${what} balances on the HTTP hash key in mode ${backend.mode}`);
  if (backend.tls !== undefined) {
    checkFileExists(`${what} crt`, backend.tls.crt, files);
    checkFileExists(`${what} ca-file`, backend.tls.caFile, files);
    checkAlpn(what, backend.tls.alpn);
  }
  const serverNames = new Set<string>();
  for (const server of backend.servers) {
    if (serverNames.has(server.name)) invalid(`${what} has two servers named ${show(server.name)}`);
    serverNames.add(server.name);
    checkServer(what, server);
  }
}

/** HAProxy's integer samples are 64-bit; Envoy's thresholds are uint32. */
const MAX_CIRCUIT_BREAKER = 4_294_967_295;
/** `error-limit` is a signed int in HAProxy. */
const MAX_ERROR_LIMIT = 2_147_483_647;

/** The circuit breaker and the passive health of a backend (translate/limits.ts). */
function checkBackendLimits(what: string, backend: Backend): void {
  if (backend.maxActive !== undefined) checkInteger(`${what} circuit breaker`, backend.maxActive, 0, MAX_CIRCUIT_BREAKER);
  const health = backend.passiveHealth;
  if (health === undefined) return;
  if (health.observe === 'layer7' && backend.mode !== 'http') invalid(`${what} observes layer7 in mode ${backend.mode}`);
  checkInteger(`${what} error-limit`, health.errorLimit, 1, MAX_ERROR_LIMIT);
  checkTimeout(`${what} ejection time`, health.ejectMs);
}

/** One server line: its name, address, port and weight. */
export function checkServer(what: string, server: Server): void {
  checkName(`${what} server name`, server.name);
  checkAddress(`${what} server ${show(server.name)} address`, server.address);
  checkInteger(`${what} server ${show(server.name)} port`, server.port, 1, MAX_PORT);
  checkInteger(`${what} server ${show(server.name)} weight`, server.weight, 0, MAX_WEIGHT);
}

/**
 * Runs a check and returns what it found wrong (without the "Invalid HAProxy model" prefix), or
 * undefined when it passed: translate uses it to leave out one bad item instead of failing all.
 */
export function modelProblem(check: () => void): string | undefined {
  try {
    check();
    return undefined;
  } catch (err) {
    if (!isHaproxyConnectError(err, 'MODEL_INVALID')) throw err;
    return err.message.replace(INVALID_PREFIX, '');
  }
}

/**
 * Why HAProxy could not use `runDir` with these socket files in it (characters haproxy.cfg cannot
 * carry unquoted, or a socket path longer than sun_path), or undefined when it can.
 */
export function runDirProblem(runDir: string, socketFiles: readonly string[]): string | undefined {
  return modelProblem(() => {
    checkAbsolutePath('run directory', runDir);
    for (const file of socketFiles) checkUnixSocketPath('socket path', runDirPath(runDir, file));
  });
}

/** Throws HaproxyConnectError('MODEL_INVALID') naming the first offending value. */
export function validateModel(model: HaproxyModel): void {
  const { global } = model;
  checkAbsolutePath('global runDir', global.runDir);
  checkFileName('global admin socket', global.adminSocket);
  checkUnixSocketPath('global admin socket path', runDirPath(global.runDir, global.adminSocket));
  checkInteger('global maxconn', global.maxconn, 1, MAX_TIMEOUT_MS);
  if (global.stats !== undefined) {
    checkFileName('global stats socket', global.stats.socket);
    checkUnixSocketPath('global stats socket path', runDirPath(global.runDir, global.stats.socket));
  }
  if (global.nbthread !== undefined) checkInteger('global nbthread', global.nbthread, 1, MAX_NBTHREAD);
  if (global.logs !== undefined) {
    checkName('global log ring', global.logs.ring);
    checkFileName('global log socket', global.logs.socket);
    checkUnixSocketPath('global log socket path', runDirPath(global.runDir, global.logs.socket));
  }

  const files = new Map<string, ModelFile>();
  for (const file of model.files) {
    checkFileName('file name', file.name);
    if (files.has(file.name)) invalid(`two files are named ${show(file.name)}`);
    checkInteger(`file ${show(file.name)} mode`, file.mode, 0, MAX_FILE_MODE);
    files.set(file.name, file);
  }

  // Proxy names are unique across frontends and backends, so `show stat` and runtime commands
  // that take a proxy name are never ambiguous.
  const proxyNames = new Set<string>();
  const spoeBackends = model.frontends.flatMap((f) => (f.spoe === undefined ? [] : [{ name: f.spoe.agentBackend }]));
  const statsFrontend = global.stats === undefined ? [] : [{ name: global.stats.frontend }];
  for (const proxy of [...model.frontends, ...model.backends, ...spoeBackends, ...statsFrontend]) {
    checkName('proxy name', proxy.name);
    if (proxyNames.has(proxy.name)) invalid(`two proxies are named ${show(proxy.name)}`);
    proxyNames.add(proxy.name);
  }
  for (const frontend of model.frontends) {
    if (frontend.spoe !== undefined) checkUnixSocketPath(`frontend ${show(frontend.name)} SPOE agent socket path`, runDirPath(global.runDir, frontend.spoe.agentSocket));
  }

  const backends = new Map(model.backends.map((backend) => [backend.name, backend]));
  for (const backend of model.backends) checkBackend(backend, files);
  for (const frontend of model.frontends) checkFrontend(frontend, backends, files);
  for (const frontend of model.frontends) {
    if (frontend.splitsMapFile !== undefined) checkFileExists(`frontend ${show(frontend.name)} splits map`, frontend.splitsMapFile, files);
  }
  for (const frontend of model.frontends) checkAccessLog(frontend, global);
  checkBindConflicts(model.frontends);
}
