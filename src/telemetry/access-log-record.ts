/**
 * HAProxy's access lines (the layout of src/domain/access-log-wire.ts) and its listener-level
 * lines (a connection that failed before it was proxied, e.g. a TLS handshake) → AccessRecord,
 * the plain data access-log-format.ts renders. PURE. A line that does not parse throws
 * AccessLineError; a field that is missing, `-` or malformed is simply absent from the record.
 */
import { isIP } from 'node:net';
import { ACCESS_LOG_MARKER, WIRE } from '../domain/access-log-wire.js';

export interface AccessRecord {
  /** `connection` (tcp frontend), `request` (http frontend) or `listener` (failed before proxying). */
  kind: 'connection' | 'request' | 'listener';
  frontend: string;
  /** Epoch milliseconds: the connection's accept (tcp), the request's first byte (http). */
  startMs: number | undefined;
  clientAddress: string | undefined;
  clientPort: number | undefined;
  frontendAddress: string | undefined;
  frontendPort: number | undefined;
  backend: string | undefined;
  /** undefined when no server was chosen (HAProxy's `<NOSRV>`). */
  server: string | undefined;
  serverAddress: string | undefined;
  serverPort: number | undefined;
  backendSourceAddress: string | undefined;
  backendSourcePort: number | undefined;
  cluster: string | undefined;
  bytesReceived: number | undefined;
  bytesSent: number | undefined;
  durationMs: number | undefined;
  /** HTTP: time to receive the request headers (TR). */
  requestMs: number | undefined;
  /** HTTP: from the request's start to the first response byte from the server (TR+Tw+Tc+Tr). */
  responseStartMs: number | undefined;
  /** HTTP: the server's response time (Tr). */
  serverResponseMs: number | undefined;
  status: number | undefined;
  /** HAProxy's two-character termination state (`--` is a normal end). */
  terminationState: string | undefined;
  /** Connection retries (HAProxy's `%rc`; its `+` for a redispatch is dropped). */
  retries: number | undefined;
  upstreamFailure: string | undefined;
  downstreamFailure: string | undefined;
  sni: string | undefined;
  /** `HTTP/1.1`, `HTTP/2.0` as HAProxy names it. */
  httpVersion: string | undefined;
  requestHeaders: Readonly<Record<string, string>>;
  responseHeaders: Readonly<Record<string, string>>;
  /** Listener lines: HAProxy's message (`SSL handshake failure`). */
  listenerMessage: string | undefined;
}

export class AccessLineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AccessLineError';
  }
}

const MARKER_PREFIX = `${ACCESS_LOG_MARKER} `;
/** The value HAProxy writes for a field it has no value for. */
const ABSENT = '-';
/** fc_err_str / bc_err_str when nothing failed. */
const NO_ERROR = 'Success';
const NO_SERVER = '<NOSRV>';
const INTEGER = /^-?\d{1,15}$/;

export function isAccessLine(message: string): boolean {
  return message.startsWith(MARKER_PREFIX);
}

function text(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' && value !== ABSENT ? value : undefined;
}

/** A non-negative integer; HAProxy writes -1 for a timer that never started. */
function count(value: unknown): number | undefined {
  const raw = text(value);
  if (raw === undefined || !INTEGER.test(raw)) return undefined;
  const n = Number(raw);
  return n >= 0 ? n : undefined;
}

function headers(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return out;
  for (const [name, raw] of Object.entries(value as Record<string, unknown>)) {
    const v = text(raw);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

function sum(...values: Array<number | undefined>): number | undefined {
  let total = 0;
  for (const v of values) {
    if (v === undefined) return undefined;
    total += v;
  }
  return total;
}

/** Parses an access line (`HCAL1 {...}`); throws AccessLineError when it is not one. */
export function parseAccessLine(message: string): AccessRecord {
  if (!isAccessLine(message)) throw new AccessLineError(`does not start with '${MARKER_PREFIX}'`);
  let wire: unknown;
  try {
    wire = JSON.parse(message.slice(MARKER_PREFIX.length));
  } catch (err) {
    // A line longer than the configured maximum arrives truncated, which shows up here.
    throw new AccessLineError(`is not valid JSON (${(err as Error).message}); ${message.length} characters`);
  }
  if (typeof wire !== 'object' || wire === null || Array.isArray(wire)) throw new AccessLineError('is not a JSON object');
  const f = wire as Record<string, unknown>;
  const frontend = text(f[WIRE.frontend]);
  if (frontend === undefined) throw new AccessLineError('names no frontend');
  const http = f[WIRE.status] !== undefined;
  const acceptSeconds = count(f[WIRE.acceptSeconds]);
  const acceptMillis = count(f[WIRE.acceptMillis]) ?? 0;
  const acceptMs = acceptSeconds === undefined ? undefined : acceptSeconds * 1000 + acceptMillis;
  const requestMs = http ? count(f[WIRE.requestMs]) : undefined;
  const serverResponseMs = http ? count(f[WIRE.responseMs]) : undefined;
  const server = text(f[WIRE.server]);
  const backendError = text(f[WIRE.backendError]);
  const frontendError = text(f[WIRE.frontendError]);
  return {
    kind: http ? 'request' : 'connection',
    frontend,
    // HTTP: a keep-alive request starts after the handshake and the idle time (Th + Ti).
    startMs: http ? sum(acceptMs, count(f[WIRE.handshakeMs]) ?? 0, count(f[WIRE.idleMs]) ?? 0) : acceptMs,
    clientAddress: text(f[WIRE.clientIp]),
    clientPort: count(f[WIRE.clientPort]),
    frontendAddress: text(f[WIRE.frontendIp]),
    frontendPort: count(f[WIRE.frontendPort]),
    backend: text(f[WIRE.backend]),
    server: server === NO_SERVER ? undefined : server,
    serverAddress: server === NO_SERVER ? undefined : text(f[WIRE.serverIp]),
    serverPort: server === NO_SERVER ? undefined : count(f[WIRE.serverPort]),
    backendSourceAddress: text(f[WIRE.backendSourceIp]),
    backendSourcePort: count(f[WIRE.backendSourcePort]),
    cluster: text(f[WIRE.cluster]),
    bytesReceived: count(f[WIRE.bytesFromClient]),
    bytesSent: count(f[WIRE.bytesToClient]),
    durationMs: http ? count(f[WIRE.activeMs]) : count(f[WIRE.totalMs]),
    requestMs,
    responseStartMs: serverResponseMs === undefined ? undefined : sum(requestMs, count(f[WIRE.queueMs]), count(f[WIRE.connectMs]), serverResponseMs),
    serverResponseMs,
    status: http ? count(f[WIRE.status]) : undefined,
    terminationState: text(f[WIRE.terminationState]),
    retries: count(text(f[WIRE.retries])?.replace(/^\+/, '')),
    upstreamFailure: backendError === NO_ERROR ? undefined : backendError,
    downstreamFailure: frontendError === NO_ERROR ? undefined : frontendError,
    sni: text(f[WIRE.sni]),
    httpVersion: http ? text(f[WIRE.httpVersion]) : undefined,
    requestHeaders: headers(f[WIRE.requestHeaders]),
    responseHeaders: headers(f[WIRE.responseHeaders]),
    listenerMessage: undefined,
  };
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/**
 * HAProxy 2.6's fixed line for a connection that failed before a stream existed:
 * `127.0.0.1:60834 [24/Nov/2026:02:18:12.256] public_listener/1: SSL handshake failure`.
 * The date is HAProxy's local time (the daemon shares its time zone: HAProxy is its child).
 */
const LISTENER_LINE = /^(\S+):(\d{1,5}) \[(\d{2})\/([A-Z][a-z]{2})\/(\d{4}):(\d{2}):(\d{2}):(\d{2})\.(\d{3})\] ([A-Za-z0-9_.:-]+)\/(\S+): (.+)$/;

/**
 * A TLS connection closed before its handshake without an error: a port probe (Consul's TCP
 * check) rather than a failure. Envoy does not log those either.
 */
const PROBE_CLOSE = 'Connection closed during SSL handshake';

export function isProbeClose(record: AccessRecord): boolean {
  return record.kind === 'listener' && record.listenerMessage === PROBE_CLOSE;
}

/** Parses a listener-level line, or returns undefined when the message is not one. */
export function parseListenerLine(message: string): AccessRecord | undefined {
  const m = LISTENER_LINE.exec(message);
  if (m === null) return undefined;
  const [, ip = '', port = '', day, month = '', year, hour, minute, second, millis, frontend = '', , what = ''] = m;
  const monthIndex = MONTHS.indexOf(month);
  if (monthIndex < 0 || isIP(ip) === 0) return undefined;
  const start = new Date(Number(year), monthIndex, Number(day), Number(hour), Number(minute), Number(second), Number(millis)).getTime();
  return {
    kind: 'listener',
    frontend,
    startMs: Number.isFinite(start) ? start : undefined,
    clientAddress: ip,
    clientPort: Number(port),
    frontendAddress: undefined,
    frontendPort: undefined,
    backend: undefined,
    server: undefined,
    serverAddress: undefined,
    serverPort: undefined,
    backendSourceAddress: undefined,
    backendSourcePort: undefined,
    cluster: undefined,
    bytesReceived: 0,
    bytesSent: 0,
    durationMs: undefined,
    requestMs: undefined,
    responseStartMs: undefined,
    serverResponseMs: undefined,
    status: undefined,
    terminationState: undefined,
    retries: undefined,
    upstreamFailure: undefined,
    downstreamFailure: what,
    sni: undefined,
    httpVersion: undefined,
    requestHeaders: {},
    responseHeaders: {},
    listenerMessage: what,
  };
}
