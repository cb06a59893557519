/**
 * Receives HAProxy's logs on a unix stream socket in the run directory (mode 600) and re-emits
 * them: HAProxy's own messages (alerts, warnings, server state changes, ...) as log lines of
 * component `haproxy` with the syslog severity mapped to our levels; access lines and listener
 * lines as AccessRecords for the access log writer.
 *
 * Why a stream socket: Node has no unix datagram sockets, and HAProxy 2.6 can forward a log ring
 * to `unix@<path>` over a stream with octet-counted framing (render-logs.ts). HAProxy never waits
 * for us: its ring drops lines when we fall behind and says so (`<N> events dropped`), which is
 * re-emitted as a warning.
 *
 * Untrusted input, bounded: one decoder per connection with a frame limit, at most
 * MAX_CONNECTIONS connections, typed errors counted and reported at most every WARN_INTERVAL_MS;
 * nothing received can throw out of this module. The socket must exist for as long as HAProxy
 * runs (main.ts closes it after HAProxy has stopped): see MAX_CONNECTIONS for why.
 */
import { chmod } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { ACCESS_LOG_MAX_LINE_BYTES } from '../domain/access-log-wire.js';
import { AccessLineError, isAccessLine, parseAccessLine, parseListenerLine, type AccessRecord } from './access-log-record.js';
import type { Logger } from '../logger.js';
import { OctetCountingDecoder, SyslogParseError, levelOfSeverity, parseSyslogMessage, type SyslogErrorKind, type SyslogMessage } from './syslog.js';

/** Largest frame accepted: the longest access line plus room for the syslog header. */
export const MAX_FRAME_BYTES = ACCESS_LOG_MAX_LINE_BYTES * 2;
/**
 * One connection per live worker (old generations overlap during reloads, up to hard-stop-after).
 * Beyond this the OLDEST connection is dropped, never the new one: measured on 2.6.12, a worker
 * whose ring cannot connect retries on every new line (one failed connect per request, throughput
 * down from about 30,000 to 4,600 requests/s), and the newest worker is the one serving traffic.
 */
export const MAX_CONNECTIONS = 64;
const SOCKET_MODE = 0o600;
const WARN_INTERVAL_MS = 10_000;
/** `local1`: the facility render-logs.ts gives access logs (listener lines come on it too). */
const ACCESS_FACILITY = 17;
const DROPPED = /^(\d{1,12}) events dropped$/;

export type ReceiverErrorKind = SyslogErrorKind | 'access';

export interface HaproxyLogStats {
  connections: number;
  frames: number;
  messages: number;
  accessRecords: number;
  /** Lines HAProxy's ring dropped because we did not keep up (as HAProxy reported them). */
  droppedByHaproxy: number;
  errors: Record<ReceiverErrorKind, number>;
}

export interface HaproxyLogReceiverOptions {
  socketPath: string;
  /** Logger of component `haproxy`: HAProxy's messages are written through it. */
  logger: Logger;
  onAccess: (record: AccessRecord) => void;
}

export class HaproxyLogReceiver {
  readonly #server: Server;
  readonly #log: Logger;
  readonly #onAccess: (record: AccessRecord) => void;
  readonly #sockets = new Set<Socket>();
  readonly #lastWarnAt = new Map<ReceiverErrorKind, number>();
  readonly #stats: HaproxyLogStats = {
    connections: 0,
    frames: 0,
    messages: 0,
    accessRecords: 0,
    droppedByHaproxy: 0,
    errors: { framing: 0, oversize: 0, syslog: 0, access: 0 },
  };

  private constructor(server: Server, options: HaproxyLogReceiverOptions) {
    this.#server = server;
    this.#log = options.logger;
    this.#onAccess = options.onAccess;
  }

  /** Listens on `socketPath` (created mode 600) before HAProxy starts. */
  static async listen(options: HaproxyLogReceiverOptions): Promise<HaproxyLogReceiver> {
    const server = createServer();
    const receiver = new HaproxyLogReceiver(server, options);
    server.on('connection', (socket) => receiver.#accept(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      await chmod(options.socketPath, SOCKET_MODE);
    } catch (err) {
      server.close();
      throw new HaproxyConnectError('LOG_RECEIVER_FAILED', `Cannot receive HAProxy's logs on '${options.socketPath}': ${errorMessage(err)}`, { cause: err });
    }
    server.on('error', (err) => options.logger.error({ err: errorMessage(err) }, 'the HAProxy log receiver failed'));
    return receiver;
  }

  get stats(): HaproxyLogStats {
    return { ...this.#stats, errors: { ...this.#stats.errors } };
  }

  #accept(socket: Socket): void {
    this.#stats.connections++;
    if (this.#sockets.size >= MAX_CONNECTIONS) {
      const oldest = this.#sockets.values().next().value;
      oldest?.destroy();
      if (oldest !== undefined) this.#sockets.delete(oldest);
    }
    this.#sockets.add(socket);
    const decoder = new OctetCountingDecoder(MAX_FRAME_BYTES);
    socket.on('data', (chunk: Buffer) => {
      for (const item of decoder.push(chunk)) {
        try {
          if (item.kind === 'frame') this.#frame(item.text);
          else this.#error(item.error, item.detail);
        } catch (err) {
          // A bug here must cost one line, never the daemon.
          this.#log.error({ source: 'syslog', err: errorMessage(err) }, 'handling a log line from haproxy failed');
        }
      }
      // Lost framing cannot be recovered: drop the connection, HAProxy reconnects.
      if (decoder.broken) socket.destroy();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#sockets.delete(socket));
  }

  #error(kind: ReceiverErrorKind, detail: string): void {
    this.#stats.errors[kind]++;
    const now = Date.now();
    if (now - (this.#lastWarnAt.get(kind) ?? 0) < WARN_INTERVAL_MS) return;
    this.#lastWarnAt.set(kind, now);
    this.#log.warn({ source: 'syslog', error: kind, detail, count: this.#stats.errors[kind] }, 'ignored a malformed log line from haproxy');
  }

  #frame(text: string): void {
    this.#stats.frames++;
    let message: SyslogMessage;
    try {
      message = parseSyslogMessage(text);
    } catch (err) {
      if (err instanceof SyslogParseError) {
        this.#error('syslog', err.message);
        return;
      }
      throw err;
    }
    if (isAccessLine(message.message)) {
      let record: AccessRecord;
      try {
        record = parseAccessLine(message.message);
      } catch (err) {
        if (err instanceof AccessLineError) {
          this.#error('access', `access line ${err.message}`);
          return;
        }
        throw err;
      }
      this.#deliver(record);
      return;
    }
    if (message.facility === ACCESS_FACILITY && message.severity === 'info') {
      const listener = parseListenerLine(message.message);
      if (listener !== undefined) {
        this.#deliver(listener);
        return;
      }
    }
    const dropped = DROPPED.exec(message.message);
    if (dropped !== null) {
      const count = Number(dropped[1]);
      this.#stats.droppedByHaproxy += count;
      this.#log.warn({ source: 'syslog', pid: message.pid, dropped: count, droppedTotal: this.#stats.droppedByHaproxy }, 'haproxy dropped log lines: the receiver did not keep up');
      return;
    }
    this.#stats.messages++;
    this.#log[levelOfSeverity(message.severity)]({ source: 'syslog', pid: message.pid, severity: message.severity }, message.message);
  }

  #deliver(record: AccessRecord): void {
    this.#stats.accessRecords++;
    try {
      this.#onAccess(record);
    } catch (err) {
      this.#log.error({ err: errorMessage(err) }, 'writing an access log line failed');
    }
  }

  /** Stops listening, drops the connections and removes the socket file. */
  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
