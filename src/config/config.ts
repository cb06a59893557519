/**
 * Flags + environment → a validated Config. Flags win over the environment; within each, a token
 * file wins over an inline token (as in Consul's api package). Defaults follow Consul's CLI.
 */
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { HaproxyConnectError } from '../errors.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../logger.js';
import { parseGoDuration } from './duration.js';
import { parseFlags, type FlagSpec } from './flags.js';
import { parseListenAddress, type ListenAddress } from './listen-address.js';

export const DEFAULT_CONSUL_ADDR = '127.0.0.1:8500';
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** A grace period longer than this is surely a typo (an orchestrator kills the process long before). */
const MAX_SHUTDOWN_GRACE_MS = 3_600_000;

export const FLAGS: readonly FlagSpec[] = [
  { name: 'sidecar-for', kind: 'string', valueName: '<service-id>', usage: 'ID of the service (registered on the local agent) whose connect-proxy registration this sidecar serves' },
  { name: 'sidecar-for-tag', kind: 'string', valueName: '<tag>', usage: "pick the connect-proxy registration carrying this tag (with -sidecar-for: among that service's proxies)" },
  {
    name: 'http-addr',
    kind: 'string',
    valueName: '<addr>',
    usage: 'Consul agent HTTP API address: host:port, http://, https:// or unix:///path (env CONSUL_HTTP_ADDR)',
    defaultText: DEFAULT_CONSUL_ADDR,
  },
  { name: 'token', kind: 'string', valueName: '<token>', usage: 'Consul ACL token (env CONSUL_HTTP_TOKEN); prefer -token-file: arguments are visible to other users' },
  { name: 'token-file', kind: 'string', valueName: '<path>', usage: 'file holding the Consul ACL token (env CONSUL_HTTP_TOKEN_FILE)' },
  { name: 'haproxy', kind: 'string', valueName: '<binary>', usage: 'haproxy binary to run', defaultText: 'haproxy from PATH' },
  {
    name: 'haproxy-cfg-base-path',
    kind: 'string',
    valueName: '<dir>',
    usage: 'directory under which a private run directory (config, certificates, sockets) is created for each run and removed on clean exit',
    defaultText: 'the system temp dir',
  },
  { name: 'log-level', kind: 'string', valueName: '<level>', usage: `log level: ${LOG_LEVELS.join(', ')}`, defaultText: 'info' },
  {
    name: 'log-format',
    kind: 'string',
    valueName: '<format>',
    usage: "format of haproxy-connect's own log lines on stdout: json (one JSON object per line) or text (time level component: message key=value ...)",
    defaultText: 'json',
  },
  {
    name: 'enable-intentions',
    kind: 'boolean',
    usage: 'enforce Consul intentions on the public listener (fail closed); -enable-intentions=false accepts every client with a certificate from the Consul CA and logs a warning',
    defaultText: 'true',
  },
  {
    name: 'shutdown-grace',
    kind: 'string',
    valueName: '<duration>',
    usage: 'on SIGTERM/SIGINT, how long in-flight requests and connections may take to finish after the listeners close (Go duration: 30s, 1m); then they are cut',
    defaultText: '10s',
  },
  {
    name: 'stats-addr',
    kind: 'string',
    valueName: '<ip:port>',
    usage: "serve /metrics (Prometheus: HAProxy's and haproxy-connect's own), /ready and /health over HTTP on this address, e.g. 127.0.0.1:9102 or [::1]:9102",
  },
  { name: 'stats-service-register', kind: 'boolean', usage: 'register a service <service>-connect-stats for -stats-addr on the local agent, with an HTTP check on /health (deregistered on exit)' },
  {
    name: 'dataplane',
    kind: 'optional-string',
    valueName: '<dataplaneapi binary>',
    usage:
      "apply every change through the HAProxy Data Plane API (v2.9.x), started next to HAProxy on a unix socket in the run directory; a bare -dataplane runs 'dataplaneapi' from PATH. Without it, haproxy-connect drives HAProxy itself (the native driver)",
  },
  { name: 'version', kind: 'boolean', usage: 'print the version and exit' },
  { name: 'help', kind: 'boolean', usage: 'print this help and exit' },
];

/** Flags of the original tool that this version does not implement yet: refused with a clear message. */
const NOT_YET_IMPLEMENTED: string[] = [];

/** What a bare `-dataplane` runs: the Data Plane API's binary name, looked up on PATH. */
export const DEFAULT_DATAPLANE_BIN = 'dataplaneapi';

export interface ConsulConnection {
  address: string;
  token: string | undefined;
  tls: { caFile?: string; certFile?: string; keyFile?: string; verify: boolean } | undefined;
}

export interface Config {
  sidecarFor: string | undefined;
  sidecarForTag: string | undefined;
  consul: ConsulConnection;
  haproxyBin: string;
  cfgBasePath: string;
  logLevel: LogLevel;
  /** -log-format: JSON lines (default) or readable text lines. */
  logFormat?: LogFormat;
  /** Authorize every incoming connection against Consul intentions (default true; -enable-intentions=false opts out). */
  enforceIntentions: boolean;
  /** On shutdown, how long open connections may take to finish after the listeners close. */
  shutdownGraceMs: number;
  /** -dataplane: the Data Plane API binary; absent: the native driver. */
  dataplaneBin?: string | undefined;
  /** -stats-addr (and -stats-service-register); absent: no stats server. */
  stats?: StatsConfig | undefined;
}

export interface StatsConfig {
  listen: ListenAddress;
  /** Register `<service>-connect-stats` on the local agent while running. */
  registerService: boolean;
}

export type CliRequest = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

export interface ConfigSources {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
}

function invalid(message: string): HaproxyConnectError {
  return new HaproxyConnectError('CONFIG_INVALID', message);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

async function readTokenFile(path: string, origin: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw invalid(`cannot read the token file '${path}' given by ${origin}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const token = text.trim();
  if (token === '') throw invalid(`the token file '${path}' given by ${origin} is empty`);
  return token;
}

function parseBool(name: string, raw: string): boolean {
  const v = raw.trim().toLowerCase();
  if (['1', 't', 'true'].includes(v)) return true;
  if (['0', 'f', 'false'].includes(v)) return false;
  throw invalid(`invalid value '${raw}' for ${name}: expected true or false`);
}

/** Normalizes a Consul address the way Consul's CLI reads CONSUL_HTTP_ADDR. */
export function normalizeConsulAddress(raw: string, origin: string, useTls: boolean): string {
  const value = raw.trim();
  if (value.startsWith('unix://')) {
    if (value.length <= 'unix://'.length) throw invalid(`invalid Consul address '${raw}' from ${origin}: empty socket path`);
    return value;
  }
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `${useTls ? 'https' : 'http'}://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw invalid(`invalid Consul address '${raw}' from ${origin}: expected host:port, http://host:port, https://host:port or unix:///path`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid(`invalid Consul address '${raw}' from ${origin}: scheme '${url.protocol.replace(':', '')}' is not http, https or unix`);
  }
  if (url.hostname === '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.username !== '') {
    throw invalid(`invalid Consul address '${raw}' from ${origin}: expected only a scheme, host and port`);
  }
  return `${url.protocol}//${url.host}`;
}

async function ensureDirectory(path: string, origin: string): Promise<void> {
  try {
    const s = await stat(path);
    if (!s.isDirectory()) throw invalid(`${origin} '${path}' is not a directory`);
  } catch (err) {
    if (err instanceof HaproxyConnectError) throw err;
    throw invalid(`${origin} '${path}' does not exist or cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export async function loadConfig({ argv, env }: ConfigSources): Promise<CliRequest> {
  const specs = [...FLAGS, ...NOT_YET_IMPLEMENTED.map((name): FlagSpec => ({ name, kind: 'string', usage: '' }))];
  const { values, positionals } = parseFlags(argv, specs);
  if (values.get('help') === true) return { kind: 'help' };
  if (values.get('version') === true) return { kind: 'version' };
  for (const name of NOT_YET_IMPLEMENTED) {
    if (values.has(name)) throw invalid(`flag -${name} is not supported by this version of haproxy-connect yet`);
  }
  if (positionals.length > 0) throw invalid(`unexpected argument '${positionals[0]}' (flags must come first; see -help)`);

  const str = (name: string): string | undefined => {
    const v = values.get(name);
    return typeof v === 'string' ? v : undefined;
  };

  const sidecarFor = str('sidecar-for');
  const sidecarForTag = str('sidecar-for-tag');
  if (sidecarFor !== undefined && sidecarFor.trim() === '') throw invalid('-sidecar-for must not be empty');
  if (sidecarForTag !== undefined && sidecarForTag.trim() === '') throw invalid('-sidecar-for-tag must not be empty');
  if (sidecarFor === undefined && sidecarForTag === undefined) {
    throw invalid('missing -sidecar-for <service-id> (or -sidecar-for-tag <tag>): which service should this sidecar serve?');
  }

  const logLevelRaw = str('log-level') ?? 'info';
  const logLevel = LOG_LEVELS.find((l) => l === logLevelRaw.toLowerCase());
  if (logLevel === undefined) throw invalid(`invalid value '${logLevelRaw}' for -log-level: expected one of ${LOG_LEVELS.join(', ')}`);
  const logFormatRaw = str('log-format') ?? 'json';
  const logFormat = LOG_FORMATS.find((f) => f === logFormatRaw.trim().toLowerCase());
  if (logFormat === undefined) throw invalid(`invalid value '${logFormatRaw}' for -log-format: expected one of ${LOG_FORMATS.join(', ')}`);

  const sslEnv = nonEmpty(env.CONSUL_HTTP_SSL);
  const useTls = sslEnv === undefined ? false : parseBool('CONSUL_HTTP_SSL', sslEnv);
  const addrFlag = nonEmpty(str('http-addr'));
  const addrEnv = nonEmpty(env.CONSUL_HTTP_ADDR);
  const address =
    addrFlag !== undefined
      ? normalizeConsulAddress(addrFlag, '-http-addr', useTls)
      : addrEnv !== undefined
        ? normalizeConsulAddress(addrEnv, 'CONSUL_HTTP_ADDR', useTls)
        : normalizeConsulAddress(DEFAULT_CONSUL_ADDR, 'the default', useTls);

  let token: string | undefined;
  const tokenFileFlag = nonEmpty(str('token-file'));
  const tokenFlag = nonEmpty(str('token'));
  const tokenFileEnv = nonEmpty(env.CONSUL_HTTP_TOKEN_FILE);
  const tokenEnv = nonEmpty(env.CONSUL_HTTP_TOKEN);
  if (tokenFileFlag !== undefined) token = await readTokenFile(tokenFileFlag, '-token-file');
  else if (tokenFlag !== undefined) token = tokenFlag.trim();
  else if (tokenFileEnv !== undefined) token = await readTokenFile(tokenFileEnv, 'CONSUL_HTTP_TOKEN_FILE');
  else if (tokenEnv !== undefined) token = tokenEnv.trim();

  const caFile = nonEmpty(env.CONSUL_CACERT);
  const certFile = nonEmpty(env.CONSUL_CLIENT_CERT);
  const keyFile = nonEmpty(env.CONSUL_CLIENT_KEY);
  const verifyEnv = nonEmpty(env.CONSUL_HTTP_SSL_VERIFY);
  const verify = verifyEnv === undefined ? true : parseBool('CONSUL_HTTP_SSL_VERIFY', verifyEnv);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw invalid('CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together');
  }
  const tlsWanted = address.startsWith('https://') || caFile !== undefined || certFile !== undefined || !verify;
  const tls = tlsWanted ? { verify, ...(caFile !== undefined && { caFile }), ...(certFile !== undefined && { certFile }), ...(keyFile !== undefined && { keyFile }) } : undefined;

  const graceRaw = str('shutdown-grace');
  const shutdownGraceMs = graceRaw === undefined ? DEFAULT_SHUTDOWN_GRACE_MS : parseGoDuration(graceRaw);
  if (shutdownGraceMs === undefined || shutdownGraceMs > MAX_SHUTDOWN_GRACE_MS) {
    throw invalid(`invalid value '${graceRaw ?? ''}' for -shutdown-grace: expected a duration such as 10s or 1m, at most 1h`);
  }

  const stats = statsConfig(str('stats-addr'), values.get('stats-service-register') === true);

  const cfgBasePath = nonEmpty(str('haproxy-cfg-base-path')) ?? tmpdir();
  await ensureDirectory(cfgBasePath, '-haproxy-cfg-base-path');

  return {
    kind: 'run',
    config: {
      sidecarFor,
      sidecarForTag,
      consul: { address, token, tls },
      haproxyBin: nonEmpty(str('haproxy')) ?? 'haproxy',
      cfgBasePath,
      logLevel,
      logFormat,
      // Secure by default: only an explicit -enable-intentions=false turns enforcement off.
      enforceIntentions: values.get('enable-intentions') !== false,
      shutdownGraceMs,
      stats,
      ...(values.has('dataplane') && { dataplaneBin: nonEmpty(str('dataplane')) ?? DEFAULT_DATAPLANE_BIN }),
    },
  };
}

function statsConfig(raw: string | undefined, registerService: boolean): StatsConfig | undefined {
  if (raw === undefined) {
    if (registerService) throw invalid('-stats-service-register needs -stats-addr <ip:port>: the registered service points at that address');
    return undefined;
  }
  const listen = parseListenAddress(raw);
  if (listen === undefined) {
    throw invalid(`invalid value '${raw}' for -stats-addr: expected <ip>:<port> such as 127.0.0.1:9102, [::1]:9102 or :9102 (every interface), with a port in 1..65535`);
  }
  return { listen, registerService };
}
