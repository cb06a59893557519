/**
 * The logging parts of haproxy.cfg: where HAProxy's own messages go, the ring that forwards them
 * (and access logs) to the daemon, and the access log lines of a frontend. PURE; render.ts calls
 * these after validate.ts has checked every name and path written here.
 *
 * Measured on 2.6.12: a ring `server` accepts `unix@<path>` with `log-proto octet-count`; a full
 * ring drops the oldest unsent lines and later reports `<N> events dropped`, while traffic is not
 * slowed (3,000 requests with the reader stopped: p99 5 ms); after a reload the new worker
 * connects on its own; when the reader comes back the worker reconnects and sends what the ring
 * still holds.
 */
import { ACCESS_LOG_MAX_LINE_BYTES, accessLogFormat, requestCaptureBytes, requestCaptureSample, HEADER_CAPTURE_BYTES } from '../domain/access-log-wire.js';
import type { Frontend, Global, LogReceiver } from './model.js';
import { quoteAddress } from './quote.js';
import { runDirPath } from '../domain/haproxy-names.js';

/**
 * Without a receiver: only notices and worse (server state changes, alerts) reach stderr.
 * `short` keeps the `<PRI>` prefix.
 */
const STDERR_LOG = 'log stderr format short local0 notice';
/** HAProxy's own messages: notices and worse. Access logs use their own facility and level. */
const MESSAGES_FACILITY = 'local0';
const MESSAGES_LEVEL = 'notice';
const ACCESS_FACILITY = 'local1';
/** HAProxy emits traffic logs at `info`. */
const ACCESS_LEVEL = 'info';
/** Ring memory per worker: about 1,000 typical access lines while the daemon is not reading. */
export const LOG_RING_BYTES = 1_048_576;
/** Room for the syslog header in front of the longest line. */
const RING_HEADER_BYTES = 256;
const RING_CONNECT_TIMEOUT = '1s';
/** Unsent data older than this on the connection closes it; the worker reconnects. */
const RING_SERVER_TIMEOUT = '10s';

/** The `log` line of the global section. */
export function globalLogLine(global: Global): string {
  if (global.logs === undefined) return STDERR_LOG;
  return `log ring@${global.logs.ring} ${MESSAGES_FACILITY} ${MESSAGES_LEVEL}`;
}

/** The ring section (after `global`), or nothing without a receiver. */
export function logRingSection(global: Global, indent: string): string[] {
  const logs: LogReceiver | undefined = global.logs;
  if (logs === undefined) return [];
  const lines = [
    // rfc5424: severity, facility, a microsecond timestamp and the worker's pid on every line.
    'format rfc5424',
    `maxlen ${ACCESS_LOG_MAX_LINE_BYTES + RING_HEADER_BYTES}`,
    `size ${LOG_RING_BYTES}`,
    `timeout connect ${RING_CONNECT_TIMEOUT}`,
    `timeout server ${RING_SERVER_TIMEOUT}`,
    `server receiver ${quoteAddress(`unix@${runDirPath(global.runDir, logs.socket)}`)} log-proto octet-count`,
  ];
  return [[`ring ${logs.ring}`, ...lines.map((line) => `${indent}${line}`)].join('\n')];
}

/**
 * A frontend without an access log keeps `log global`, for HAProxy's own messages about it (a
 * process out of file descriptors or memory at accept, `Proxy ... stopped`), but builds no
 * traffic line. Without a log-format, HAProxy 2.6 formats a `Connect from <addr> to <addr>` line
 * for every stream (in HTTP mode, every request) in `frontend_accept` and only then drops it by its
 * level (info, below the `notice` of the global log): 1.35–1.6 µs per request at each sidecar, measured
 * with `perf` on the bench's hc-http pair (vfprintf, addr_to_str, getpid and __send_log under
 * frontend_accept). With a log-format nothing is formatted at accept, and with `dontlog-normal` the
 * end-of-stream log returns before building a line unless the stream failed (and then at info,
 * which the global log drops too).
 */
const NO_TRAFFIC_LOG = ['option dontlog-normal', 'log-format "%ci:%cp %ft %b/%s %tsc"'];

/**
 * A frontend's access log: its own `log` target (replacing `log global`, so its notices are not
 * sent twice), the header captures the template needs (HTTP), and the wire `log-format`. Without
 * one (or without a receiver for it), the lines that keep HAProxy from formatting traffic lines
 * nobody reads (NO_TRAFFIC_LOG).
 */
export function frontendAccessLogLines(frontend: Frontend, global: Global): string[] {
  const log = frontend.accessLog;
  if (log === undefined || global.logs === undefined) return [...NO_TRAFFIC_LOG];
  const lines = ['no log', `log ring@${global.logs.ring} len ${ACCESS_LOG_MAX_LINE_BYTES} ${ACCESS_FACILITY} ${ACCESS_LEVEL}`];
  // TCP: one line per connection, also one that sent nothing (a server-speaks-first connection
  // denied by intentions), as Envoy logs them. HTTP keeps dontlognull: a connection without a
  // request is not a request (HAProxy would log it as <BADREQ>).
  if (frontend.mode === 'tcp') lines.push('no option dontlognull');
  if (frontend.mode === 'http') {
    for (const header of log.requestHeaders) {
      lines.push(`http-request capture ${requestCaptureSample(header)} len ${requestCaptureBytes(header)}`);
    }
    for (const _header of log.responseHeaders) lines.push(`declare capture response len ${HEADER_CAPTURE_BYTES}`);
    log.responseHeaders.forEach((header, index) => {
      lines.push(`http-response capture res.fhdr(${header}) id ${index}`);
    });
  }
  lines.push(`log-format ${accessLogFormat(frontend)}`);
  return lines;
}
