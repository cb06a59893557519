/**
 * Where access lines go: Consul's AccessLogs (Enabled, DisableListenerLogs, Type stdout / stderr /
 * file with Path, JSONFormat / TextFormat) applied to the records the HAProxy log receiver parses.
 * Settings change while running (a new proxy-defaults entry): the sink is swapped only when Type
 * or Path changed; a file that cannot be opened is an error naming the path, and the previous sink
 * keeps the lines meanwhile.
 */
import { open as openFd } from 'node:fs';
import { hostname } from 'node:os';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import type { AccessLogs } from '../domain/snapshot.js';
import { formatAccessRecord } from './access-log-format.js';
import { isProbeClose, type AccessRecord } from './access-log-record.js';
import { unsupportedOperators } from '../domain/access-log-template.js';
import { FILE_CHUNK_BYTES, LineSink, PIPE_CHUNK_BYTES } from './line-sink.js';
import type { Logger } from '../logger.js';

/** Access log files are created like Envoy's: readable by all, written by us. */
const ACCESS_LOG_FILE_MODE = 0o644;
/** Lines still queued at shutdown get this long to be written. */
const CLOSE_TIMEOUT_MS = 2_000;
/** Repeated sink problems (drops, write errors) are logged at most this often. */
const WARN_INTERVAL_MS = 10_000;
const STDOUT_FD = 1;
const STDERR_FD = 2;

export interface AccessLogWriterOptions {
  logger: Logger;
  /** `%HOSTNAME%`; the machine's host name by default. */
  hostname?: string;
  /** Tests: where `stdout` / `stderr` sinks write. */
  stdoutFd?: number;
  stderrFd?: number;
  maxQueuedBytes?: number;
}

export interface AccessLogWriterStats {
  /** Lines handed to the sink. */
  lines: number;
  /** Records that arrived while access logs were off (an old worker, a race with a reload). */
  ignored: number;
  /** Listener-level records dropped because of DisableListenerLogs. */
  listenerSuppressed: number;
  /** TLS connections closed before the handshake without an error (port probes): never logged. */
  probes: number;
  /** Lines the sink dropped (queue full or write error). */
  dropped: number;
}

function sinkKey(logs: AccessLogs): string {
  return logs.sink.type === 'file' ? `file:${logs.sink.path}` : logs.sink.type;
}

export class AccessLogWriter {
  readonly #log: Logger;
  readonly #hostname: string;
  readonly #stdoutFd: number;
  readonly #stderrFd: number;
  readonly #maxQueuedBytes: number | undefined;
  #settings: AccessLogs | undefined;
  #sink: LineSink | undefined;
  #sinkKey: string | undefined;
  #configuring: Promise<void> = Promise.resolve();
  #lastWarnAt = 0;
  #stats: AccessLogWriterStats = { lines: 0, ignored: 0, listenerSuppressed: 0, probes: 0, dropped: 0 };

  constructor(options: AccessLogWriterOptions) {
    this.#log = options.logger;
    this.#hostname = options.hostname ?? hostname();
    this.#stdoutFd = options.stdoutFd ?? STDOUT_FD;
    this.#stderrFd = options.stderrFd ?? STDERR_FD;
    this.#maxQueuedBytes = options.maxQueuedBytes;
  }

  get stats(): AccessLogWriterStats {
    return { ...this.#stats, dropped: this.#stats.dropped + (this.#sink?.stats.dropped ?? 0) };
  }

  /**
   * Applies new settings (undefined or disabled: access lines are ignored). Rejects with
   * ACCESS_LOG_FAILED when a file sink cannot be opened; the previous settings stay in force.
   */
  configure(accessLogs: AccessLogs | undefined): Promise<void> {
    const next = this.#configuring.then(() => this.#apply(accessLogs));
    this.#configuring = next.catch(() => {});
    return next;
  }

  async #apply(accessLogs: AccessLogs | undefined): Promise<void> {
    if (accessLogs === undefined || !accessLogs.enabled) {
      if (this.#settings?.enabled === true) this.#log.info('access logs disabled');
      this.#settings = accessLogs;
      await this.#swapSink(undefined, undefined);
      return;
    }
    const key = sinkKey(accessLogs);
    if (key !== this.#sinkKey) await this.#swapSink(await this.#openSink(accessLogs), key);
    const changed = this.#settings?.enabled !== true || sinkKey(this.#settings) !== key || this.#settings.format !== accessLogs.format;
    this.#settings = accessLogs;
    if (!changed) return;
    this.#log.info(
      {
        type: accessLogs.sink.type,
        ...(accessLogs.sink.type === 'file' && { path: accessLogs.sink.path }),
        format: accessLogs.format.kind,
        listenerLogs: !accessLogs.disableListenerLogs,
      },
      'access logs enabled',
    );
    const unsupported = unsupportedOperators(accessLogs.format);
    if (unsupported.length > 0) {
      this.#log.warn({ operators: unsupported }, 'the access log format uses operators HAProxy cannot provide: they are logged as null (JSON) or - (text)');
    }
  }

  async #openSink(accessLogs: AccessLogs): Promise<LineSink> {
    const onError = (err: NodeJS.ErrnoException): void => this.#warn('cannot write an access log line', { code: err.code, err: err.message, type: accessLogs.sink.type });
    const base = { onError, ...(this.#maxQueuedBytes !== undefined && { maxQueuedBytes: this.#maxQueuedBytes }) };
    const { sink } = accessLogs;
    if (sink.type === 'stdout') return new LineSink({ ...base, fd: this.#stdoutFd, owned: false, chunkBytes: PIPE_CHUNK_BYTES });
    if (sink.type === 'stderr') return new LineSink({ ...base, fd: this.#stderrFd, owned: false, chunkBytes: PIPE_CHUNK_BYTES });
    let fd: number;
    try {
      // A plain descriptor (not a FileHandle): the LineSink owns and closes it.
      fd = await new Promise<number>((resolve, reject) => {
        openFd(sink.path, 'a', ACCESS_LOG_FILE_MODE, (err, opened) => (err ? reject(err) : resolve(opened)));
      });
    } catch (err) {
      throw new HaproxyConnectError(
        'ACCESS_LOG_FAILED',
        `Cannot open the access log file '${sink.path}' (proxy-defaults AccessLogs.Path): ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`,
        { cause: err },
      );
    }
    return new LineSink({ ...base, fd, owned: true, chunkBytes: FILE_CHUNK_BYTES });
  }

  async #swapSink(sink: LineSink | undefined, key: string | undefined): Promise<void> {
    const previous = this.#sink;
    if (previous === sink) return;
    if (previous !== undefined) this.#stats.dropped += previous.stats.dropped;
    this.#sink = sink;
    this.#sinkKey = key;
    await previous?.close(CLOSE_TIMEOUT_MS);
  }

  #warn(msg: string, fields: object): void {
    const now = Date.now();
    if (now - this.#lastWarnAt < WARN_INTERVAL_MS) return;
    this.#lastWarnAt = now;
    this.#log.warn({ ...fields, ...this.stats }, msg);
  }

  /** Formats and queues one record; never throws, never waits. */
  write(record: AccessRecord): void {
    const settings = this.#settings;
    const sink = this.#sink;
    if (settings === undefined || !settings.enabled || sink === undefined) {
      this.#stats.ignored++;
      return;
    }
    if (isProbeClose(record)) {
      this.#stats.probes++;
      return;
    }
    if (record.kind === 'listener' && settings.disableListenerLogs) {
      this.#stats.listenerSuppressed++;
      return;
    }
    const line = formatAccessRecord(settings.format, record, { hostname: this.#hostname });
    if (sink.write(line)) this.#stats.lines++;
    else this.#warn('access log lines dropped: the sink is not keeping up', { type: settings.sink.type });
  }

  async close(): Promise<void> {
    await this.#configuring;
    await this.#swapSink(undefined, undefined);
  }
}
