/**
 * AccessRecord + the user's template (Consul's JSONFormat / TextFormat, or Consul's default
 * JSON) → one access log line, as Envoy would write it. PURE (the host name is passed in).
 *
 * JSON: a value that is exactly one operator keeps its type (numbers for RESPONSE_CODE,
 * BYTES_*, DURATION, ...), and an operator without a value is null; anywhere else a missing
 * value is `-`, as in Envoy's typed JSON. Text: a missing value is `-`.
 */
import type { AccessRecord } from './access-log-record.js';
import { UPSTREAM_SERVICE_TIME_HEADER, headerAlternatives, type AccessLogFormat, type JsonTemplateNode, type TemplateOperator, type TextPart } from '../domain/access-log-template.js';

export interface FormatContext {
  hostname: string;
}

type Value = string | number | null;

const MISSING = '-';
const TERMINATION_NORMAL = new Set(['--', '----']);

function address(ip: string | undefined, port: number | undefined): string | null {
  if (ip === undefined) return null;
  if (port === undefined) return ip;
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Envoy's response flags from HAProxy's termination state (README: "Access logs"). */
export function responseFlags(record: AccessRecord): string {
  const state = record.terminationState;
  if (state === undefined || state.length < 2) return MISSING;
  const [cause, phase] = [state[0], state[1]];
  switch (cause) {
    case 'C':
      return 'DC';
    case 'S':
      // No server and no attempt: none was available. After failed attempts (retries and a
      // redispatch clear the server) it is a connection failure.
      if (record.server === undefined && (record.retries ?? 0) === 0) return 'UH';
      return phase === 'C' ? 'UF' : 'UC';
    case 's':
      return phase === 'C' ? 'UF' : 'UT';
    case 'c':
      return 'SI';
    default:
      return MISSING;
  }
}

function terminationDetails(record: AccessRecord): string | null {
  if (record.listenerMessage !== undefined) return record.listenerMessage;
  const state = record.terminationState;
  if (state === undefined || TERMINATION_NORMAL.has(state)) return null;
  return record.downstreamFailure === undefined ? state.slice(0, 2) : `${state.slice(0, 2)} (${record.downstreamFailure})`;
}

function protocol(record: AccessRecord): string {
  const version = record.httpVersion;
  if (record.kind !== 'request' || version === undefined) return MISSING;
  return version === 'HTTP/2.0' ? 'HTTP/2' : version;
}

function header(record: AccessRecord, names: readonly string[], response: boolean): string | null {
  for (const name of names) {
    if (response && name === UPSTREAM_SERVICE_TIME_HEADER) {
      if (record.serverResponseMs !== undefined) return String(record.serverResponseMs);
      continue;
    }
    const value = (response ? record.responseHeaders : record.requestHeaders)[name];
    if (value !== undefined) return value;
  }
  return null;
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** `%START_TIME(...)%` with a format: the strftime subset Envoy users write, in UTC. */
export function formatStartTime(ms: number, pattern: string): string {
  const d = new Date(ms);
  return pattern.replace(/%([1-9]?f|[YmdHMSszZFT%])/g, (_, spec: string) => {
    switch (spec) {
      case 'Y':
        return String(d.getUTCFullYear());
      case 'm':
        return pad(d.getUTCMonth() + 1);
      case 'd':
        return pad(d.getUTCDate());
      case 'H':
        return pad(d.getUTCHours());
      case 'M':
        return pad(d.getUTCMinutes());
      case 'S':
        return pad(d.getUTCSeconds());
      case 's':
        return String(Math.floor(ms / 1000));
      case 'z':
        return '+0000';
      case 'Z':
        return 'UTC';
      case 'F':
        return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
      case 'T':
        return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
      case '%':
        return '%';
      default: {
        // %f is nanoseconds (9 digits); %3f milliseconds. HAProxy gives milliseconds.
        const digits = spec === 'f' ? 9 : Number(spec[0]);
        return pad(d.getUTCMilliseconds(), 3).padEnd(9, '0').slice(0, digits);
      }
    }
  });
}

type Getter = (record: AccessRecord, ctx: FormatContext) => Value;

const upstreamHost: Getter = (r) => address(r.serverAddress, r.serverPort);
const downstreamRemote: Getter = (r) => address(r.clientAddress, r.clientPort);

/** Operators without arguments → how to read them from a record. */
const GETTERS: Readonly<Record<string, Getter>> = {
  PROTOCOL: protocol,
  // Envoy logs 0 when there is no HTTP response (TCP, or no response before the end).
  RESPONSE_CODE: (r) => (r.kind === 'request' ? (r.status ?? 0) : 0),
  RESPONSE_CODE_DETAILS: (r) => (r.kind === 'request' && r.server !== undefined && r.serverResponseMs !== undefined ? 'via_upstream' : null),
  CONNECTION_TERMINATION_DETAILS: terminationDetails,
  RESPONSE_FLAGS: responseFlags,
  BYTES_RECEIVED: (r) => r.bytesReceived ?? 0,
  BYTES_SENT: (r) => r.bytesSent ?? 0,
  DURATION: (r) => r.durationMs ?? null,
  REQUEST_DURATION: (r) => (r.kind === 'request' ? (r.requestMs ?? null) : null),
  RESPONSE_DURATION: (r) => (r.kind === 'request' ? (r.responseStartMs ?? null) : null),
  UPSTREAM_HOST: upstreamHost,
  UPSTREAM_REMOTE_ADDRESS: upstreamHost,
  UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: (r) => r.serverAddress ?? null,
  UPSTREAM_REMOTE_PORT: (r) => r.serverPort ?? null,
  UPSTREAM_CLUSTER: (r) => r.cluster ?? null,
  UPSTREAM_LOCAL_ADDRESS: (r) => address(r.backendSourceAddress, r.backendSourcePort),
  UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT: (r) => r.backendSourceAddress ?? null,
  UPSTREAM_LOCAL_PORT: (r) => r.backendSourcePort ?? null,
  UPSTREAM_TRANSPORT_FAILURE_REASON: (r) => r.upstreamFailure ?? null,
  UPSTREAM_REQUEST_ATTEMPT_COUNT: (r) => (r.server === undefined ? 0 : (r.retries ?? 0) + 1),
  DOWNSTREAM_REMOTE_ADDRESS: downstreamRemote,
  DOWNSTREAM_DIRECT_REMOTE_ADDRESS: downstreamRemote,
  DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT: (r) => r.clientAddress ?? null,
  DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT: (r) => r.clientAddress ?? null,
  DOWNSTREAM_REMOTE_PORT: (r) => r.clientPort ?? null,
  DOWNSTREAM_DIRECT_REMOTE_PORT: (r) => r.clientPort ?? null,
  DOWNSTREAM_LOCAL_ADDRESS: (r) => address(r.frontendAddress, r.frontendPort),
  DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT: (r) => r.frontendAddress ?? null,
  DOWNSTREAM_LOCAL_PORT: (r) => r.frontendPort ?? null,
  REQUESTED_SERVER_NAME: (r) => r.sni ?? null,
  HOSTNAME: (_r, ctx) => ctx.hostname,
};

const NONE: Getter = () => null;

/** Resolves an operator once (header names split, START_TIME pattern kept) into a reader. */
function operatorGetter(op: TemplateOperator): Getter {
  switch (op.name) {
    case 'START_TIME': {
      const pattern = op.args;
      if (pattern === undefined || pattern === '') return (r) => (r.startMs === undefined ? null : new Date(r.startMs).toISOString());
      return (r) => (r.startMs === undefined ? null : formatStartTime(r.startMs, pattern));
    }
    case 'REQ':
    case 'RESP': {
      const names = headerAlternatives(op);
      const response = op.name === 'RESP';
      return (r) => header(r, names, response);
    }
    default:
      return GETTERS[op.name] ?? NONE;
  }
}

/** The value of one operator, or null when HAProxy has none for this record. */
export function operatorValue(op: TemplateOperator, record: AccessRecord, ctx: FormatContext): Value {
  return operatorGetter(op)(record, ctx);
}

function truncated(value: Value, maxLength: number | undefined): Value {
  return typeof value === 'string' && maxLength !== undefined ? value.slice(0, maxLength) : value;
}

// Control characters in a value (an odd header) must not split a text line.
const CONTROL = /[\u0000-\u001f\u007f]/g;
function escapeControls(value: string): string {
  return value.replace(CONTROL, (c) => JSON.stringify(c).slice(1, -1));
}

type Render = (record: AccessRecord, ctx: FormatContext) => string;

/** A value with its max length applied. */
function limited(op: TemplateOperator): Getter {
  const get = operatorGetter(op);
  const max = op.maxLength;
  return max === undefined ? get : (r, ctx) => truncated(get(r, ctx), max);
}

function compileText(parts: readonly TextPart[], escapeValues: boolean): Render {
  const pieces = parts.map((part): Render => {
    if (typeof part === 'string') return () => part;
    const get = limited(part);
    return (r, ctx) => {
      const value = get(r, ctx);
      const text = value === null || value === '' ? MISSING : String(value);
      return escapeValues ? escapeControls(text) : text;
    };
  });
  return (r, ctx) => {
    let out = '';
    for (const piece of pieces) out += piece(r, ctx);
    return out;
  };
}

/** Renders a JSON template node straight to JSON text (no intermediate objects per line). */
function compileJson(node: JsonTemplateNode): Render {
  switch (node.kind) {
    case 'constant': {
      const text = JSON.stringify(node.value) ?? 'null';
      return () => text;
    }
    case 'object': {
      const entries = node.entries.map(([key, child]) => ({ prefix: `${JSON.stringify(key)}:`, render: compileJson(child) }));
      return (r, ctx) => {
        let out = '{';
        for (let i = 0; i < entries.length; i++) {
          const entry = entries[i] as (typeof entries)[number];
          out += (i === 0 ? '' : ',') + entry.prefix + entry.render(r, ctx);
        }
        return `${out}}`;
      };
    }
    case 'format': {
      const [only] = node.parts;
      if (node.parts.length === 1 && only !== undefined && typeof only !== 'string') {
        // A lone operator keeps its type: numbers stay numbers, no value is null.
        const get = limited(only);
        return (r, ctx) => JSON.stringify(get(r, ctx));
      }
      const text = compileText(node.parts, false);
      return (r, ctx) => JSON.stringify(text(r, ctx));
    }
  }
}

const compiled = new WeakMap<AccessLogFormat, Render>();

function compile(format: AccessLogFormat): Render {
  let render = compiled.get(format);
  if (render === undefined) {
    if (format.kind === 'json') {
      render = compileJson(format.root);
    } else {
      const text = compileText(format.parts, true);
      // Consul adds a trailing newline to text formats; the writer adds exactly one.
      render = (r, ctx) => text(r, ctx).replace(/\n+$/, '');
    }
    compiled.set(format, render);
  }
  return render;
}

/** One access log line, without the trailing newline. Templates are compiled once per format. */
export function formatAccessRecord(format: AccessLogFormat, record: AccessRecord, ctx: FormatContext): string {
  return compile(format)(record, ctx);
}
