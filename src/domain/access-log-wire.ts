/**
 * The access log line HAProxy writes for the daemon, and nothing else: render.ts puts
 * `accessLogFormat(...)` into the frontend's `log-format`, and the receiver
 * (src/telemetry/access-log-record.ts) parses it back with the same keys.
 *
 * The line is `HCAL1 ` and a JSON object whose values are all strings: HAProxy's numeric fields
 * are quoted (`%ms` is zero-padded, so it would not be a JSON number), and every free-text value
 * (headers, path, SNI, error strings) passes through HAProxy's `json(utf8s)` converter, which
 * escapes quotes, backslashes and control characters. A field HAProxy has no value for is `-`.
 * The user's JSONFormat/TextFormat is applied by the daemon, never by HAProxy. PURE.
 */

/** Marks access lines among HAProxy's messages; the digit is the version of this layout. */
export const ACCESS_LOG_MARKER = 'HCAL1';

/** Longest log line HAProxy builds for an access log (`log ... len`); longer lines are truncated. */
export const ACCESS_LOG_MAX_LINE_BYTES = 32_768;
/** Captured request/response header bytes (per header): bounds the line whatever the client sends. */
export const HEADER_CAPTURE_BYTES = 256;
/** `:path` (path and query) is captured up to this many bytes. */
export const PATH_CAPTURE_BYTES = 1_024;
/** Methods are short; anything longer is truncated. */
export const METHOD_CAPTURE_BYTES = 16;

/** Keys of the wire object (short: they are on every line). */
export const WIRE = {
  frontend: 'f',
  acceptSeconds: 'ts',
  acceptMillis: 'ms',
  handshakeMs: 'th',
  idleMs: 'ti',
  requestMs: 'tR',
  queueMs: 'tw',
  connectMs: 'tc',
  responseMs: 'tr',
  activeMs: 'ta',
  totalMs: 'tt',
  clientIp: 'ci',
  clientPort: 'cp',
  frontendIp: 'fi',
  frontendPort: 'fp',
  backend: 'b',
  server: 's',
  serverIp: 'si',
  serverPort: 'sp',
  backendSourceIp: 'bi',
  backendSourcePort: 'bp',
  bytesFromClient: 'rx',
  bytesToClient: 'tx',
  terminationState: 'st',
  status: 'sc',
  retries: 'rc',
  backendError: 'be',
  frontendError: 'fe',
  sni: 'sni',
  httpVersion: 'v',
  cluster: 'cl',
  requestHeaders: 'q',
  responseHeaders: 'r',
} as const;

const JSON_STRING = 'json(utf8s)';

/** The HAProxy sample a request "header" of the template is captured from. */
export function requestCaptureSample(header: string): string {
  if (header === ':method') return 'method';
  if (header === ':path') return 'pathq';
  // HAProxy turns HTTP/2's :authority into the Host header.
  if (header === ':authority') return 'req.fhdr(host)';
  return `req.fhdr(${header})`;
}

export function requestCaptureBytes(header: string): number {
  if (header === ':method') return METHOD_CAPTURE_BYTES;
  if (header === ':path') return PATH_CAPTURE_BYTES;
  return HEADER_CAPTURE_BYTES;
}

/** `"key":"value"` with the quotes escaped for a double-quoted haproxy.cfg argument. */
function pair(key: string, value: string): string {
  return `\\"${key}\\":\\"${value}\\"`;
}

function headerObject(key: string, headers: readonly string[], fetch: (index: number) => string): string {
  const inner = headers.map((header, index) => pair(header, `%[${fetch(index)},${JSON_STRING}]`)).join(',');
  return `\\"${key}\\":{${inner}}`;
}

/** What accessLogFormat reads of a frontend (the model's Frontend has these fields). */
export interface AccessLoggedFrontend {
  name: string;
  mode: 'tcp' | 'http';
  tls?: unknown;
  accessLog?: { cluster: string; requestHeaders: readonly string[]; responseHeaders: readonly string[] } | undefined;
}

/** What accessLogFormat reads of a frontend (the model's Frontend has these fields). */
export interface AccessLoggedFrontend {
  name: string;
  mode: 'tcp' | 'http';
  tls?: unknown;
  accessLog?: { cluster: string; requestHeaders: readonly string[]; responseHeaders: readonly string[] } | undefined;
}

/**
 * The `log-format` argument (with its surrounding double quotes) for a frontend with an access
 * log. Names written literally (the cluster, header names) were checked by validate.ts to hold
 * no quote, backslash, `%` or space.
 */
export function accessLogFormat(frontend: AccessLoggedFrontend): string {
  const log = frontend.accessLog;
  if (log === undefined) throw new Error(`frontend ${frontend.name} has no access log`);
  const fields: string[] = [
    pair(WIRE.frontend, '%f'),
    pair(WIRE.acceptSeconds, '%Ts'),
    pair(WIRE.acceptMillis, '%ms'),
    pair(WIRE.handshakeMs, '%Th'),
    pair(WIRE.queueMs, '%Tw'),
    pair(WIRE.connectMs, '%Tc'),
    pair(WIRE.totalMs, '%Tt'),
    pair(WIRE.clientIp, '%ci'),
    pair(WIRE.clientPort, '%cp'),
    pair(WIRE.frontendIp, '%fi'),
    pair(WIRE.frontendPort, '%fp'),
    pair(WIRE.backend, '%b'),
    pair(WIRE.server, '%s'),
    pair(WIRE.serverIp, '%si'),
    pair(WIRE.serverPort, '%sp'),
    pair(WIRE.backendSourceIp, '%bi'),
    pair(WIRE.backendSourcePort, '%bp'),
    pair(WIRE.bytesFromClient, '%U'),
    pair(WIRE.bytesToClient, '%B'),
    pair(WIRE.terminationState, '%ts'),
    pair(WIRE.retries, '%rc'),
    pair(WIRE.backendError, `%[bc_err_str,${JSON_STRING}]`),
    pair(WIRE.frontendError, `%[fc_err_str,${JSON_STRING}]`),
    pair(WIRE.cluster, log.cluster),
  ];
  if (frontend.tls !== undefined) fields.push(pair(WIRE.sni, `%[ssl_fc_sni,${JSON_STRING}]`));
  if (frontend.mode === 'http') {
    fields.push(
      pair(WIRE.idleMs, '%Ti'),
      pair(WIRE.requestMs, '%TR'),
      pair(WIRE.responseMs, '%Tr'),
      pair(WIRE.activeMs, '%Ta'),
      pair(WIRE.status, '%ST'),
      pair(WIRE.httpVersion, `%[capture.req.ver,${JSON_STRING}]`),
      headerObject(WIRE.requestHeaders, log.requestHeaders, (i) => `capture.req.hdr(${i})`),
      headerObject(WIRE.responseHeaders, log.responseHeaders, (i) => `capture.res.hdr(${i})`),
    );
  }
  return `"${ACCESS_LOG_MARKER} {${fields.join(',')}}"`;
}
