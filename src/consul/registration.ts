/**
 * Turns the agent's connect-proxy registration (GET /v1/agent/service/<id>) into the snapshot's
 * ProxyRegistration, with Consul's defaults. Central config (proxy-defaults, service-defaults) is
 * already merged in by the agent. `Config` maps are opaque to Consul and decoded weakly typed, so
 * numbers may arrive as JSON numbers or numeric strings; anything else is rejected here.
 */
import { HaproxyConnectError, isHaproxyConnectError } from '../errors.js';
import type { AccessLogSink, AccessLogs, DroppedItem, Protocol, ProxyRegistration, PublicListener, Upstream } from '../domain/snapshot.js';
import { AccessLogTemplateError, checkTemplateHeaders, defaultAccessLogFormat, parseJsonFormat, parseTextFormat, type AccessLogFormat } from '../domain/access-log-template.js';
import type { AgentServiceJson, UpstreamJson } from './schemas.js';
import { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from '../domain/consul.js';
import { parseUpstreamLimits } from './upstream-limits.js';
import { parseExpose } from './expose.js';
import { show } from './show.js';

export const DEFAULT_PROTOCOL: Protocol = 'tcp';
export const PROTOCOLS: readonly Protocol[] = ['tcp', 'http', 'http2', 'grpc'];
export const DEFAULT_LOCAL_SERVICE_ADDRESS = '127.0.0.1';
export const DEFAULT_PUBLIC_BIND_ADDRESS = '0.0.0.0';
export const DEFAULT_UPSTREAM_BIND_ADDRESS = '127.0.0.1';
export const DEFAULT_LOCAL_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS = 5000;

type Config = Record<string, unknown>;

class Context {
  readonly proxyId: string;
  constructor(proxyId: string) {
    this.proxyId = proxyId;
  }
  fail(message: string): HaproxyConnectError {
    return new HaproxyConnectError('PROXY_CONFIG_INVALID', `proxy '${this.proxyId}': ${message}`);
  }
}

/** A non-negative integer from a JSON number or a numeric string; undefined when absent/null/''. */
function readInteger(ctx: Context, field: string, value: unknown, min: number, max: number): number | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\s*[+-]?\d+(\.\d+)?\s*$/.test(value)) n = Number(value);
  else throw ctx.fail(`${field} ${show(value)} is not a number`);
  if (!Number.isInteger(n)) throw ctx.fail(`${field} ${show(value)} is not a whole number`);
  if (n < min || n > max) throw ctx.fail(`${field} ${show(value)} is out of range (${min}..${max})`);
  return n;
}

function readPort(ctx: Context, field: string, value: unknown): number | undefined {
  return readInteger(ctx, field, value, 1, 65535);
}

function readTimeoutMs(ctx: Context, field: string, value: unknown): number | undefined {
  return readInteger(ctx, field, value, 0, Number.MAX_SAFE_INTEGER);
}

function readString(ctx: Context, field: string, value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw ctx.fail(`${field} ${show(value)} is not a string`);
  return value;
}

function readProtocol(ctx: Context, field: string, value: unknown): Protocol {
  const raw = readString(ctx, field, value);
  if (raw === undefined) return DEFAULT_PROTOCOL;
  const lower = raw.toLowerCase();
  const found = PROTOCOLS.find((p) => p === lower);
  if (found === undefined) throw ctx.fail(`${field} ${show(raw)} is not one of ${PROTOCOLS.join(', ')}`);
  return found;
}

/** Consul gives LocalBindSocketMode as an octal string such as "0600". */
function readSocketMode(ctx: Context, field: string, value: string): number | undefined {
  if (value === '') return undefined;
  if (!/^[0-7]{1,4}$/.test(value)) throw ctx.fail(`${field} ${show(value)} is not an octal file mode`);
  return Number.parseInt(value, 8);
}

function parsePublicListener(ctx: Context, raw: AgentServiceJson, config: Config, protocol: Protocol): PublicListener {
  const proxy = raw.Proxy;
  const bindPort = readPort(ctx, 'Config.bind_port', config['bind_port']) ?? (raw.Port > 0 ? readPort(ctx, 'Port', raw.Port) : undefined);
  if (bindPort === undefined) throw ctx.fail(`neither Config.bind_port nor Port is set (Port ${raw.Port})`);
  const localServicePort = proxy?.LocalServicePort ?? 0;
  if (localServicePort <= 0) {
    throw ctx.fail(`Proxy.LocalServicePort ${show(localServicePort)} must be set (1..65535)`);
  }
  readPort(ctx, 'Proxy.LocalServicePort', localServicePort);
  return {
    bindAddress: readString(ctx, 'Config.bind_address', config['bind_address']) ?? (raw.Address !== '' ? raw.Address : DEFAULT_PUBLIC_BIND_ADDRESS),
    bindPort,
    protocol,
    localServiceAddress: proxy?.LocalServiceAddress || DEFAULT_LOCAL_SERVICE_ADDRESS,
    localServicePort,
    localConnectTimeoutMs: readTimeoutMs(ctx, 'Config.local_connect_timeout_ms', config['local_connect_timeout_ms']) ?? DEFAULT_LOCAL_CONNECT_TIMEOUT_MS,
    localRequestTimeoutMs: readTimeoutMs(ctx, 'Config.local_request_timeout_ms', config['local_request_timeout_ms']),
  };
}

export function upstreamKey(type: string, namespace: string, name: string, datacenter: string): string {
  return `${type}:${namespace}/${name}@${datacenter}`;
}

/** `settings` receives the upstream's settings that fell back to their defaults (limits, passive health). */
function parseUpstream(ctx: Context, raw: UpstreamJson, index: number, settings: DroppedItem[]): Upstream {
  const at = `Upstreams[${index}]`;
  const type = raw.DestinationType === '' ? 'service' : raw.DestinationType;
  if (type !== 'service' && type !== 'prepared_query') {
    throw ctx.fail(`${at}.DestinationType ${show(type)} is not one of service, prepared_query`);
  }
  if (raw.DestinationName === '') throw ctx.fail(`${at}.DestinationName is empty`);
  const namespace = raw.DestinationNamespace || DEFAULT_NAMESPACE;
  const name = raw.DestinationName;
  const datacenter = raw.Datacenter;
  const label = `${at} (${upstreamKey(type, namespace, name, datacenter)})`;

  const socketPath = raw.LocalBindSocketPath === '' ? undefined : raw.LocalBindSocketPath;
  const port = raw.LocalBindPort;
  if (socketPath !== undefined && port !== 0) {
    throw ctx.fail(`${label} sets both LocalBindPort ${port} and LocalBindSocketPath ${show(socketPath)}; set exactly one`);
  }
  if (socketPath === undefined) {
    if (port === 0) throw ctx.fail(`${label} sets neither LocalBindPort nor LocalBindSocketPath; set exactly one`);
    readPort(ctx, `${label} LocalBindPort`, port);
  }
  const config: Config = raw.Config;
  const connectTimeout = readTimeoutMs(ctx, `${label} Config.connect_timeout_ms`, config['connect_timeout_ms']);
  const { limits, passiveHealthCheck, problems } = parseUpstreamLimits(config);
  for (const p of problems) settings.push({ kind: 'setting', item: `${at} ${p.field}`, reason: ctx.fail(`${label} ${p.reason}`).message });
  return {
    key: upstreamKey(type, namespace, name, datacenter),
    destinationType: type,
    destinationName: name,
    destinationNamespace: namespace,
    datacenter,
    localBindAddress: raw.LocalBindAddress || DEFAULT_UPSTREAM_BIND_ADDRESS,
    localBindPort: socketPath === undefined ? port : 0,
    localBindSocketPath: socketPath,
    localBindSocketMode: socketPath === undefined ? undefined : readSocketMode(ctx, `${label} LocalBindSocketMode`, raw.LocalBindSocketMode),
    // The agent has already merged central config, so an absent protocol means Consul's default.
    protocol: readProtocol(ctx, `${label} Config.protocol`, config['protocol']),
    connectTimeoutMs: connectTimeout ?? DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
    ...(connectTimeout !== undefined && { configuredConnectTimeoutMs: connectTimeout }),
    ...(limits !== undefined && { limits }),
    ...(passiveHealthCheck !== undefined && { passiveHealthCheck }),
  };
}

/** Longest part of a bad template quoted in an error message. */
const MAX_SHOWN_TEMPLATE_CHARS = 120;
const ACCESS_LOG_TYPES = ['stdout', 'stderr', 'file'] as const;

function readBoolean(ctx: Context, field: string, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') throw ctx.fail(`${field} ${show(value)} is not a boolean`);
  return value;
}

function shownTemplate(text: string): string {
  return show(text.length > MAX_SHOWN_TEMPLATE_CHARS ? `${text.slice(0, MAX_SHOWN_TEMPLATE_CHARS)}...` : text);
}

function readAccessLogFormat(ctx: Context, json: string | undefined, text: string | undefined): AccessLogFormat {
  const [field, raw] = json !== undefined ? ['AccessLogs.JSONFormat', json] : ['AccessLogs.TextFormat', text];
  try {
    const format = json !== undefined ? parseJsonFormat(json) : text !== undefined ? { kind: 'text' as const, parts: parseTextFormat(text) } : defaultAccessLogFormat();
    checkTemplateHeaders(format);
    return format;
  } catch (err) {
    if (!(err instanceof AccessLogTemplateError)) throw err;
    throw ctx.fail(`${field} ${shownTemplate(raw ?? '')} ${err.message}`);
  }
}

/** Proxy.AccessLogs, validated as Consul validates the proxy-defaults entry (AccessLogsConfig.Validate). */
function parseAccessLogs(ctx: Context, raw: Record<string, unknown>): AccessLogs {
  const typeRaw = readString(ctx, 'AccessLogs.Type', raw['Type']) ?? 'stdout';
  const type = ACCESS_LOG_TYPES.find((t) => t === typeRaw);
  if (type === undefined) throw ctx.fail(`AccessLogs.Type ${show(typeRaw)} is not one of ${ACCESS_LOG_TYPES.join(', ')}`);
  const path = readString(ctx, 'AccessLogs.Path', raw['Path']);
  let sink: AccessLogSink;
  if (type === 'file') {
    if (path === undefined) throw ctx.fail("AccessLogs.Path must be set when AccessLogs.Type is 'file'");
    sink = { type, path };
  } else {
    if (path !== undefined) throw ctx.fail(`AccessLogs.Path ${show(path)} is only valid with AccessLogs.Type 'file' (Type is ${show(type)})`);
    sink = { type };
  }
  const json = readString(ctx, 'AccessLogs.JSONFormat', raw['JSONFormat']);
  const text = readString(ctx, 'AccessLogs.TextFormat', raw['TextFormat']);
  if (json !== undefined && text !== undefined) throw ctx.fail('AccessLogs sets both JSONFormat and TextFormat; set at most one');
  return {
    enabled: readBoolean(ctx, 'AccessLogs.Enabled', raw['Enabled']),
    disableListenerLogs: readBoolean(ctx, 'AccessLogs.DisableListenerLogs', raw['DisableListenerLogs']),
    sink,
    format: readAccessLogFormat(ctx, json, text),
  };
}

function bindOf(u: Upstream): string {
  return u.localBindSocketPath !== undefined ? `unix:${u.localBindSocketPath}` : `${u.localBindAddress}:${u.localBindPort}`;
}

/** Validates and defaults a connect-proxy registration the way Consul reads it. */
export function parseProxyRegistration(raw: AgentServiceJson): ProxyRegistration {
  const ctx = new Context(raw.ID);
  if (raw.Kind !== 'connect-proxy') {
    throw ctx.fail(`service kind ${show(raw.Kind)} is not 'connect-proxy'`);
  }
  const proxy = raw.Proxy;
  if (proxy === null || proxy === undefined) throw ctx.fail('the registration has no Proxy block');
  if (proxy.DestinationServiceName === '') throw ctx.fail('Proxy.DestinationServiceName is empty');
  const config: Config = proxy.Config;
  const protocol = readProtocol(ctx, 'Config.protocol', config['protocol']);
  const publicListener = parsePublicListener(ctx, raw, config, protocol);

  // One bad upstream is left out (and reported); the others, and the rest of the proxy, apply.
  const upstreams: Upstream[] = [];
  const droppedUpstreams: DroppedItem[] = [];
  const keys = new Map<string, number>();
  const binds = new Map<string, number>();
  proxy.Upstreams.forEach((raw, i) => {
    let u: Upstream;
    const settings: DroppedItem[] = [];
    try {
      u = parseUpstream(ctx, raw, i, settings);
    } catch (err) {
      if (!isHaproxyConnectError(err, 'PROXY_CONFIG_INVALID')) throw err;
      droppedUpstreams.push({ kind: 'upstream', item: `Upstreams[${i}]`, reason: err.message });
      return;
    }
    const sameKey = keys.get(u.key);
    const bind = bindOf(u);
    const sameBind = binds.get(bind);
    if (sameKey !== undefined) {
      droppedUpstreams.push({ kind: 'upstream', item: `Upstreams[${i}]`, reason: ctx.fail(`Upstreams[${sameKey}] and Upstreams[${i}] are both ${u.key}; Upstreams[${i}] is left out`).message });
    } else if (sameBind !== undefined) {
      droppedUpstreams.push({ kind: 'upstream', item: `Upstreams[${i}]`, reason: ctx.fail(`Upstreams[${sameBind}] and Upstreams[${i}] both bind ${bind}; Upstreams[${i}] is left out`).message });
    } else {
      keys.set(u.key, i);
      binds.set(bind, i);
      upstreams.push(u);
      droppedUpstreams.push(...settings);
    }
  });

  const accessLogs = proxy.AccessLogs === null || proxy.AccessLogs === undefined ? undefined : parseAccessLogs(ctx, proxy.AccessLogs);
  const expose = parseExpose(proxy.Expose, publicListener.localServicePort);

  return {
    proxyId: raw.ID,
    proxyName: raw.Service,
    serviceName: proxy.DestinationServiceName,
    serviceId: proxy.DestinationServiceID || proxy.DestinationServiceName,
    namespace: raw.Namespace || DEFAULT_NAMESPACE,
    partition: raw.Partition || DEFAULT_PARTITION,
    publicListener,
    upstreams,
    ...(accessLogs !== undefined && { accessLogs }),
    ...(droppedUpstreams.length > 0 && { droppedUpstreams }),
    ...(expose !== undefined && { expose }),
  };
}
