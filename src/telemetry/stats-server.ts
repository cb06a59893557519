/**
 * The -stats-addr HTTP server (node:http):
 * - GET /metrics: haproxy-connect's own metrics followed by HAProxy's (its built-in Prometheus
 *   exporter, read over the stats socket). When HAProxy cannot be read, ours are served alone
 *   with `haproxy_connect_haproxy_scrape_success 0`.
 * - GET /ready: 200 while HAProxy serves with a valid leaf and CA roots, else 503 and why.
 * - GET /health: 200 while the daemon and HAProxy are alive, else 503 and why.
 * Anything else is 404 (405 for another method on these paths). Answers are one line of text.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { http } from '../builtins.js';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { formatListenAddress, type ListenAddress } from '../config/listen-address.js';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import type { HaproxyStatsClient } from './haproxy-stats.js';
import type { Logger } from '../logger.js';
import type { SidecarMetrics } from './metrics.js';
import { liveness, readiness, type SidecarView, type Verdict } from './readiness.js';

const TEXT = 'text/plain; charset=utf-8';
/** Scrapers and probes send tiny requests; do not let a slow client hold a socket. */
const REQUEST_TIMEOUT_MS = 10_000;
const HEADERS_TIMEOUT_MS = 5_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

export interface StatsServerOptions {
  listen: ListenAddress;
  metrics: SidecarMetrics;
  haproxy: HaproxyStatsClient;
  /** The sidecar as /ready and /health see it, read on every request. */
  view: () => SidecarView;
  /** The Envoy-compatible series (envoy-compat.ts) for HAProxy's text of this scrape ('' when unread). */
  envoy?: (haproxyText: string) => string;
  logger: Logger;
  now?: () => number;
}

export class StatsServer {
  readonly #opts: StatsServerOptions;
  readonly #server: Server;
  readonly #now: () => number;
  /** Logged once per change, so a scraper polling a dead HAProxy does not flood the log. */
  #lastScrapeError: string | undefined;

  private constructor(opts: StatsServerOptions, server: Server) {
    this.#opts = opts;
    this.#server = server;
    this.#now = opts.now ?? Date.now;
  }

  /** Listens on `listen`; a bind failure (address in use, not local) is STATS_LISTEN_FAILED naming the address. */
  static async listen(opts: StatsServerOptions): Promise<StatsServer> {
    const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS });
    const stats = new StatsServer(opts, server);
    server.on('request', (req, res) => stats.#handle(req, res));
    const shown = formatListenAddress(opts.listen);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(
          new HaproxyConnectError(
            'STATS_LISTEN_FAILED',
            `Cannot serve -stats-addr ${shown}: ${err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EADDRNOTAVAIL' ? 'the address is not one of this host' : errorMessage(err)}`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen({ port: opts.listen.port, ...(opts.listen.host !== undefined && { host: opts.listen.host }) }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (err) => opts.logger.error({ err: errorMessage(err) }, 'stats server error'));
    opts.logger.info({ address: stats.address }, 'stats server listening (/metrics, /ready, /health)');
    return stats;
  }

  /** The bound address (the real port when 0 was asked for, in tests). */
  get address(): string {
    const info = this.#server.address() as AddressInfo;
    return formatListenAddress({ host: info.address, port: info.port });
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    const route = path === '/metrics' ? this.#metrics : path === '/ready' ? this.#ready : path === '/health' ? this.#health : undefined;
    if (route === undefined) {
      reply(res, 404, `not found: ${path ?? ''} (try /metrics, /ready or /health)`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      reply(res, 405, `method ${req.method ?? ''} not allowed`);
      return;
    }
    route.call(this, res).catch((err: unknown) => {
      this.#opts.logger.error({ err: errorMessage(err), path }, 'stats request failed');
      if (!res.headersSent) reply(res, 500, 'internal error');
      else res.destroy();
    });
  }

  async #metrics(res: ServerResponse): Promise<void> {
    const { metrics, haproxy, logger } = this.#opts;
    const startedAt = performance.now();
    let haproxyText = '';
    let scrapeError: string | undefined;
    const state = this.#opts.view().haproxyState;
    if (state !== 'running' && state !== 'reloading') scrapeError = `haproxy is ${state}`;
    else {
      try {
        haproxyText = await haproxy.metrics();
      } catch (err) {
        scrapeError = errorMessage(err);
      }
    }
    metrics.haproxyScraped(scrapeError === undefined, performance.now() - startedAt);
    if (scrapeError !== this.#lastScrapeError) {
      if (scrapeError === undefined) logger.info('haproxy metrics readable again');
      else logger.warn({ err: scrapeError }, 'cannot read haproxy metrics; serving our own only');
      this.#lastScrapeError = scrapeError;
    }
    const own = metrics.exposition();
    const body = haproxyText === '' || haproxyText.endsWith('\n') ? `${own}${haproxyText}` : `${own}${haproxyText}\n`;
    const envoy = this.#envoyText(haproxyText);
    res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
    res.end(`${body}${envoy}`);
  }

  /** A failure here costs the Envoy-compatible series of one scrape, never the scrape. */
  #envoyText(haproxyText: string): string {
    try {
      return this.#opts.envoy?.(haproxyText) ?? '';
    } catch (err) {
      this.#opts.logger.error({ err: errorMessage(err) }, 'computing the Envoy-compatible metrics failed');
      return '';
    }
  }

  async #ready(res: ServerResponse): Promise<void> {
    answer(res, readiness(this.#opts.view(), this.#now()));
  }

  async #health(res: ServerResponse): Promise<void> {
    const view = this.#opts.view();
    const serving = view.haproxyState === 'running' || view.haproxyState === 'reloading';
    const probeError = serving ? await this.#opts.haproxy.probe() : undefined;
    answer(res, liveness(view, probeError));
  }
}

function reply(res: ServerResponse, status: number, line: string): void {
  res.writeHead(status, { 'content-type': TEXT, 'cache-control': 'no-store' });
  res.end(`${line}\n`);
}

function answer(res: ServerResponse, verdict: Verdict): void {
  reply(res, verdict.ok ? 200 : 503, verdict.reason);
}
