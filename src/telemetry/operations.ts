/**
 * The -stats-addr feature as main.ts wires it: the metrics registry (created first, so the
 * authorizer and the reconciler can report into it), the stats server and the optional Consul
 * service, started once HAProxy's supervisor, the reconciler and the watches exist, and stopped in
 * the shutdown path. /ready answers 503 from the moment the root signal aborts.
 */
import type { StatsConfig } from '../config/config.js';
import { errorMessage } from '../errors.js';
import type { ProcessState } from '../domain/haproxy.js';
import type { Leaf, MissingPart, Roots, Snapshot, SnapshotEvent } from '../domain/snapshot.js';
import type { AccessRecord } from './access-log-record.js';
import { EnvoyLatency, envoyExposition } from './envoy-compat.js';
import { type EnvoyView, envoyView } from './envoy-tags.js';
import { HaproxyStatsClient } from './haproxy-stats.js';
import type { Logger } from '../logger.js';
import { SidecarMetrics, type BuildInfo } from './metrics.js';
import type { SidecarView } from './readiness.js';
import { readiness } from './readiness.js';
import { StatsServer } from './stats-server.js';
import { StatsServiceRegistration, type ServiceRegistry } from './stats-service.js';

export interface OperationsOptions {
  stats: StatsConfig;
  /** Where -stats-service-register registers the stats service (the Consul agent client). */
  consul: ServiceRegistry;
  proxy: { id: string; serviceName: string };
  build: BuildInfo;
  /** HAProxy's stats socket (the `frontend stats` of the generated configuration). */
  statsSocket: string;
  /** The first leaf and roots (fetched before anything starts); later ones come through `snapshotChanged`. */
  leaf: Leaf;
  roots: Roots;
  /** The root signal: once it aborts, /ready answers 503. */
  signal: AbortSignal;
  logger: Logger;
}

/** What exists only once main has built the supervisor, the reconciler and the watches. */
export interface OperationsSources {
  haproxyState(): ProcessState;
  firstApplied: Promise<void>;
  missing(): readonly MissingPart[];
  runningWatches(): readonly string[];
  spoe(): { connections: number; protocolErrors: number; handlerErrors: number } | undefined;
  /** The complete snapshot (undefined while parts are missing): the labels of the Envoy-compatible series. */
  snapshot?(): Snapshot | undefined;
}

export class Operations {
  readonly metrics: SidecarMetrics;
  readonly #opts: OperationsOptions;
  readonly #haproxyStats: HaproxyStatsClient;
  readonly #registration: StatsServiceRegistration | undefined;
  #sources: OperationsSources | undefined;
  #firstApplied = false;
  #leafValidBefore: string;
  #caRoots: number;
  #server: StatsServer | undefined;
  readonly #latency = new EnvoyLatency();
  #envoyView: EnvoyView | undefined;
  #envoyViewStale = true;

  constructor(opts: OperationsOptions) {
    this.#opts = opts;
    this.#leafValidBefore = opts.leaf.validBefore;
    this.#caRoots = opts.roots.roots.length;
    this.#haproxyStats = new HaproxyStatsClient({ socketPath: opts.statsSocket });
    this.metrics = new SidecarMetrics(opts.build, {
      ready: () => readiness(this.view(), Date.now()).ok,
      haproxyState: () => this.#sources?.haproxyState() ?? 'stopped',
      leafValidBefore: () => this.#leafValidBefore,
      caRoots: () => this.#caRoots,
      runningWatches: () => this.#sources?.runningWatches() ?? [],
      spoe: () => this.#sources?.spoe(),
    });
    this.#registration = opts.stats.registerService
      ? new StatsServiceRegistration(opts.consul, { proxyId: opts.proxy.id, serviceName: opts.proxy.serviceName, listen: opts.stats.listen, version: opts.build.version }, opts.logger)
      : undefined;
  }

  /** The sidecar as /ready and /health see it. */
  view(): SidecarView {
    return {
      shuttingDown: this.#opts.signal.aborted,
      firstApplied: this.#firstApplied,
      missing: this.#sources?.missing() ?? [],
      haproxyState: this.#sources?.haproxyState() ?? 'stopped',
      leafValidBefore: this.#leafValidBefore,
      caRoots: this.#caRoots,
    };
  }

  /** A change folded into the snapshot (after SnapshotState.apply said it changed). */
  snapshotChanged(event: SnapshotEvent): void {
    if (event.kind === 'leaf') this.#leafValidBefore = event.value.validBefore;
    if (event.kind === 'roots') this.#caRoots = event.value.roots.length;
    this.#envoyViewStale = true;
    this.metrics.snapshotChanged(event.kind);
  }

  /** Listens on -stats-addr, then registers the stats service; a failure of either is a start error. */
  async start(sources: OperationsSources): Promise<void> {
    this.#sources = sources;
    sources.firstApplied.then(
      () => {
        this.#firstApplied = true;
      },
      () => {},
    );
    this.#server = await StatsServer.listen({
      listen: this.#opts.stats.listen,
      metrics: this.metrics,
      haproxy: this.#haproxyStats,
      view: () => this.view(),
      envoy: (haproxyText) => envoyExposition(haproxyText, this.#currentEnvoyView(), this.#latency),
      logger: this.#opts.logger,
    });
    await this.#registration?.register(this.#opts.signal);
  }

  /** An access record from HAProxy's log receiver: feeds the Envoy-compatible latency histograms. */
  readonly accessObserved = (record: AccessRecord): void => {
    if (record.kind !== 'request') return;
    this.#currentEnvoyView();
    this.#latency.observe(record);
  };

  /** Recomputed after a snapshot change, on the next scrape or access record. */
  #currentEnvoyView(): EnvoyView | undefined {
    if (this.#envoyViewStale) {
      const snapshot = this.#sources?.snapshot?.();
      if (snapshot !== undefined) {
        this.#envoyView = envoyView(snapshot);
        this.#latency.setView(this.#envoyView);
        this.#envoyViewStale = false;
      }
    }
    return this.#envoyView;
  }

  /** HAProxy came back after a crash: register again, in case Consul reaped the service meanwhile. Never throws. */
  async reregister(): Promise<void> {
    if (this.#registration === undefined || this.#opts.signal.aborted) return;
    try {
      await this.#registration.register(this.#opts.signal);
    } catch (err) {
      this.#opts.logger.warn({ err: errorMessage(err) }, 'cannot register the stats service again');
    }
  }

  /** Deregisters the stats service and closes the server. Never throws. */
  async stop(): Promise<void> {
    await this.#registration?.deregister();
    await this.#server?.close().catch((err: unknown) => this.#opts.logger.error({ err: errorMessage(err) }, 'closing the stats server failed'));
    await this.#haproxyStats.close().catch(() => {});
  }
}
