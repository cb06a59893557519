/**
 * Access log templates as Consul's `AccessLogs.JSONFormat` / `TextFormat` write them: text with
 * Envoy command operators (`%START_TIME%`, `%REQ(:METHOD)%`, `%REQ(USER-AGENT):64%`), or a JSON
 * object whose string values are such texts. Parsed once at the boundary (registration.ts) into
 * plain data; translate reads which headers to capture, access-log-format.ts renders lines.
 * PURE, no imports: the snapshot types and translate depend on it.
 */

/** One Envoy command operator: `%NAME(args):maxLength%`. */
export interface TemplateOperator {
  name: string;
  args: string | undefined;
  maxLength: number | undefined;
}

/** A literal piece of text or an operator. */
export type TextPart = string | TemplateOperator;

export type JsonConstant = string | number | boolean | null | JsonConstant[] | { [key: string]: JsonConstant };

export type JsonTemplateNode = { kind: 'format'; parts: TextPart[] } | { kind: 'object'; entries: Array<[string, JsonTemplateNode]> } | { kind: 'constant'; value: JsonConstant };

export type AccessLogFormat = { kind: 'json'; root: Extract<JsonTemplateNode, { kind: 'object' }> } | { kind: 'text'; parts: TextPart[] };

/**
 * Consul's default access log format (agent/xds/accesslogs): used when neither JSONFormat nor
 * TextFormat is set. Same keys and operators, so default lines look like Consul's.
 */
export const DEFAULT_JSON_FORMAT = JSON.stringify({
  start_time: '%START_TIME%',
  route_name: '%ROUTE_NAME%',
  method: '%REQ(:METHOD)%',
  path: '%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%',
  protocol: '%PROTOCOL%',
  response_code: '%RESPONSE_CODE%',
  response_flags: '%RESPONSE_FLAGS%',
  response_code_details: '%RESPONSE_CODE_DETAILS%',
  connection_termination_details: '%CONNECTION_TERMINATION_DETAILS%',
  bytes_received: '%BYTES_RECEIVED%',
  bytes_sent: '%BYTES_SENT%',
  duration: '%DURATION%',
  upstream_service_time: '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%',
  x_forwarded_for: '%REQ(X-FORWARDED-FOR)%',
  user_agent: '%REQ(USER-AGENT)%',
  request_id: '%REQ(X-REQUEST-ID)%',
  authority: '%REQ(:AUTHORITY)%',
  upstream_host: '%UPSTREAM_HOST%',
  upstream_cluster: '%UPSTREAM_CLUSTER%',
  upstream_local_address: '%UPSTREAM_LOCAL_ADDRESS%',
  downstream_local_address: '%DOWNSTREAM_LOCAL_ADDRESS%',
  downstream_remote_address: '%DOWNSTREAM_REMOTE_ADDRESS%',
  requested_server_name: '%REQUESTED_SERVER_NAME%',
  upstream_transport_failure_reason: '%UPSTREAM_TRANSPORT_FAILURE_REASON%',
});

/** Operators haproxy-connect fills from HAProxy's log fields; any other renders as null / `-`. */
export const SUPPORTED_OPERATORS: readonly string[] = [
  'START_TIME',
  'PROTOCOL',
  'RESPONSE_CODE',
  'RESPONSE_CODE_DETAILS',
  'CONNECTION_TERMINATION_DETAILS',
  'RESPONSE_FLAGS',
  'BYTES_RECEIVED',
  'BYTES_SENT',
  'DURATION',
  'REQUEST_DURATION',
  'RESPONSE_DURATION',
  'UPSTREAM_HOST',
  'UPSTREAM_CLUSTER',
  'UPSTREAM_LOCAL_ADDRESS',
  'UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT',
  'UPSTREAM_LOCAL_PORT',
  'UPSTREAM_REMOTE_ADDRESS',
  'UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT',
  'UPSTREAM_REMOTE_PORT',
  'UPSTREAM_TRANSPORT_FAILURE_REASON',
  'UPSTREAM_REQUEST_ATTEMPT_COUNT',
  'DOWNSTREAM_REMOTE_ADDRESS',
  'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT',
  'DOWNSTREAM_REMOTE_PORT',
  'DOWNSTREAM_DIRECT_REMOTE_ADDRESS',
  'DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT',
  'DOWNSTREAM_DIRECT_REMOTE_PORT',
  'DOWNSTREAM_LOCAL_ADDRESS',
  'DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT',
  'DOWNSTREAM_LOCAL_PORT',
  'REQUESTED_SERVER_NAME',
  'HOSTNAME',
  'REQ',
  'RESP',
];
const SUPPORTED: ReadonlySet<string> = new Set(SUPPORTED_OPERATORS);

/** Request pseudo-headers HAProxy can provide (`:scheme` and the rest cannot be told apart reliably). */
export const REQUEST_PSEUDO_HEADERS: readonly string[] = [':method', ':path', ':authority'];
/** Envoy sets this itself on rewrites; HAProxy never does, so `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%` is the path. */
const ENVOY_ORIGINAL_PATH = 'x-envoy-original-path';
/** The response header Envoy fills with the upstream's response time: HAProxy's `Tr`. */
export const UPSTREAM_SERVICE_TIME_HEADER = 'x-envoy-upstream-service-time';
/**
 * Header names that can be captured: they are written into haproxy.cfg (capture rules and the
 * log-format keys), so only lowercase letters, digits, `-` and `_`.
 */
const CAPTURABLE_HEADER = /^[a-z0-9_-]{1,64}$/;
/** More distinct headers than this in one template are refused: each one is a capture slot per request. */
export const MAX_TEMPLATE_HEADERS = 16;

const OPERATOR = /%([A-Z][A-Z0-9_]*)(?:\(([^)]*)\))?(?::(\d{1,9}))?%/g;

export class AccessLogTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AccessLogTemplateError';
  }
}

/** Splits a format string into literals and operators. Text that is not an operator stays literal. */
export function parseTextFormat(text: string): TextPart[] {
  const parts: TextPart[] = [];
  let last = 0;
  for (const match of text.matchAll(OPERATOR)) {
    const index = match.index ?? 0;
    if (index > last) parts.push(text.slice(last, index));
    const [, name = '', args, maxLength] = match;
    parts.push({ name, args, maxLength: maxLength === undefined ? undefined : Number(maxLength) });
    last = index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function templateNode(value: unknown): JsonTemplateNode {
  if (typeof value === 'string') return { kind: 'format', parts: parseTextFormat(value) };
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return { kind: 'object', entries: Object.entries(value).map(([key, child]) => [key, templateNode(child)]) };
  }
  return { kind: 'constant', value: value as JsonConstant };
}

/** A JSONFormat: a JSON object whose string values are format strings (nesting allowed, as in Envoy). */
export function parseJsonFormat(json: string): AccessLogFormat {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    throw new AccessLogTemplateError(`is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AccessLogTemplateError('must be a JSON object mapping keys to format strings');
  }
  const root = templateNode(value);
  if (root.kind !== 'object') throw new AccessLogTemplateError('must be a JSON object');
  return { kind: 'json', root };
}

/** Consul's default format, parsed. */
export function defaultAccessLogFormat(): AccessLogFormat {
  return parseJsonFormat(DEFAULT_JSON_FORMAT);
}

function* operatorsOfParts(parts: readonly TextPart[]): Generator<TemplateOperator> {
  for (const part of parts) if (typeof part !== 'string') yield part;
}

function* operatorsOfNode(node: JsonTemplateNode): Generator<TemplateOperator> {
  if (node.kind === 'format') yield* operatorsOfParts(node.parts);
  else if (node.kind === 'object') for (const [, child] of node.entries) yield* operatorsOfNode(child);
}

export function templateOperators(format: AccessLogFormat): TemplateOperator[] {
  return [...(format.kind === 'json' ? operatorsOfNode(format.root) : operatorsOfParts(format.parts))];
}

/** `%REQ(A?B)%` names header A with B as the fallback: both lowercased. */
export function headerAlternatives(op: TemplateOperator): string[] {
  return (op.args ?? '')
    .split('?')
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h !== '');
}

function capturable(header: string, pseudo: readonly string[]): boolean {
  return header.startsWith(':') ? pseudo.includes(header) : CAPTURABLE_HEADER.test(header);
}

export interface TemplateHeaders {
  /** Request headers (and `:method`, `:path`, `:authority`) the template reads, sorted. */
  request: string[];
  /** Response headers the template reads, sorted (the upstream service time is not captured: it is `Tr`). */
  response: string[];
}

/** Which headers HAProxy must capture for this template. */
export function templateHeaders(format: AccessLogFormat): TemplateHeaders {
  const request = new Set<string>();
  const response = new Set<string>();
  for (const op of templateOperators(format)) {
    if (op.name === 'REQ') {
      for (const h of headerAlternatives(op)) if (h !== ENVOY_ORIGINAL_PATH && capturable(h, REQUEST_PSEUDO_HEADERS)) request.add(h);
    } else if (op.name === 'RESP') {
      for (const h of headerAlternatives(op)) if (h !== UPSTREAM_SERVICE_TIME_HEADER && capturable(h, [])) response.add(h);
    }
  }
  return { request: [...request].sort(), response: [...response].sort() };
}

/** Operator names (and header operators HAProxy cannot capture) that will render as null / `-`. */
export function unsupportedOperators(format: AccessLogFormat): string[] {
  const out = new Set<string>();
  for (const op of templateOperators(format)) {
    if (!SUPPORTED.has(op.name)) {
      out.add(op.name);
      continue;
    }
    if (op.name !== 'REQ' && op.name !== 'RESP') continue;
    const pseudo = op.name === 'REQ' ? REQUEST_PSEUDO_HEADERS : [];
    const special = op.name === 'REQ' ? ENVOY_ORIGINAL_PATH : UPSTREAM_SERVICE_TIME_HEADER;
    for (const h of headerAlternatives(op)) if (h !== special && !capturable(h, pseudo)) out.add(`${op.name}(${h})`);
  }
  return [...out].sort();
}

/** Throws when the template needs more capture slots than MAX_TEMPLATE_HEADERS. */
export function checkTemplateHeaders(format: AccessLogFormat): void {
  const { request, response } = templateHeaders(format);
  const count = request.length + response.length;
  if (count > MAX_TEMPLATE_HEADERS) {
    throw new AccessLogTemplateError(`reads ${count} distinct headers; at most ${MAX_TEMPLATE_HEADERS} are supported`);
  }
}
