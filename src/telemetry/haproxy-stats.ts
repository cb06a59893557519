/**
 * Reads HAProxy's own metrics frontend (render.ts: the Prometheus exporter and `monitor-uri` on a
 * unix socket in the run directory) over HTTP. One connection per request
 * (`Connection: close`): after a reload the socket is served by the new worker, and a pooled
 * connection to the old one would fail the next scrape.
 */
import { http } from '../builtins.js';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { exchange } from '../http-exchange.js';
import { STATS_HEALTH_PATH, STATS_METRICS_PATH } from '../domain/haproxy-names.js';

/** A scrape of a small instance takes about a millisecond; bound it well below Prometheus' 10 s default. */
export const DEFAULT_SCRAPE_TIMEOUT_MS = 3_000;
export const DEFAULT_PROBE_TIMEOUT_MS = 1_000;
const HTTP_OK = 200;

export interface HaproxyStatsOptions {
  /** Absolute path of the stats socket. */
  socketPath: string;
  scrapeTimeoutMs?: number;
  probeTimeoutMs?: number;
}

export class HaproxyStatsClient {
  readonly socketPath: string;
  /** Without keep-alive: every request says `Connection: close`. */
  readonly #agent = new http.Agent({ keepAlive: false });
  readonly #scrapeTimeoutMs: number;
  readonly #probeTimeoutMs: number;

  constructor(options: HaproxyStatsOptions) {
    this.socketPath = options.socketPath;
    this.#scrapeTimeoutMs = options.scrapeTimeoutMs ?? DEFAULT_SCRAPE_TIMEOUT_MS;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  }

  /** HAProxy's Prometheus text exposition; throws (with the reason) when it cannot be read. */
  async metrics(): Promise<string> {
    return this.#get(STATS_METRICS_PATH, this.#scrapeTimeoutMs);
  }

  /** Undefined when HAProxy answered its health URI with 200, else why not. Never throws. */
  async probe(): Promise<string | undefined> {
    try {
      await this.#get(STATS_HEALTH_PATH, this.#probeTimeoutMs);
      return undefined;
    } catch (err) {
      return errorMessage(err);
    }
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }

  async #get(path: string, timeoutMs: number): Promise<string> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new HaproxyConnectError('HAPROXY_STATS_FAILED', `GET ${path} on ${this.socketPath}: no answer within ${timeoutMs} ms`)), timeoutMs);
    let status: number;
    let body: string;
    try {
      const res = await exchange({ agent: this.#agent, tls: false, socketPath: this.socketPath, method: 'GET', path, headers: { host: 'localhost' }, signal: controller.signal });
      status = res.status;
      body = res.body;
    } catch (err) {
      if (controller.signal.aborted) throw controller.signal.reason as Error;
      throw new HaproxyConnectError('HAPROXY_STATS_FAILED', `GET ${path} on ${this.socketPath} failed: ${describe(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    if (status !== HTTP_OK) throw new HaproxyConnectError('HAPROXY_STATS_FAILED', `GET ${path} on ${this.socketPath} answered HTTP ${status}`);
    return body;
  }
}

/** Keep the socket error's code (ENOENT, ECONNREFUSED) that says what happened. */
function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown } }).cause;
  const code = (err as { code?: unknown }).code ?? cause?.code;
  return typeof code === 'string' ? `${code} ${errorMessage(err)}` : errorMessage(err);
}
