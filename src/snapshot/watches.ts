/**
 * Starts and stops the Consul watches of one sidecar, a keyed two-level set: its proxy
 * registration, its leaf (and, when enforced, its service's intentions, which follow the same
 * service name) and the CA roots; then, from the registration, one watch per target of the
 * upstreams' chains, started and stopped as the chains change, keyed by target id (starting one
 * that runs is a no-op). Watches only emit tagged events; SnapshotState owns the data.
 */
import type { ConsulAgentApi, Cursor, Versioned } from '../consul/api.js';
import { runWatch } from '../consul/watch.js';
import type { SnapshotEvent } from './fold.js';
import { trivialChain } from '../domain/chain.js';
import type { Endpoint, ProxyRegistration, Target, Upstream } from '../domain/snapshot.js';

/** Watches of upstream targets are named `target:<target id>`. */
export const TARGET_WATCH_PREFIX = 'target:';
/** Prepared queries cannot block: poll them at this interval. */
export const PREPARED_QUERY_POLL_MS = 10_000;

export interface WatchErrorReport {
  watch: string;
  error: Error;
  /** Consecutive failed requests; 0 when the request succeeded but applying its value threw (`consumer`). */
  attempt: number;
  /** `fetch`: the request failed (retried with backoff); `consumer`: folding the answer in threw (the answer is dropped). */
  kind: 'fetch' | 'consumer';
}

export interface SidecarWatchesOptions {
  api: ConsulAgentApi;
  /** The local agent's datacenter: targets are named with theirs resolved. */
  datacenter: string;
  proxyId: string;
  emit: (event: SnapshotEvent) => void;
  onError: (report: WatchErrorReport) => void;
  /** A watch got an answer, changed or not (watch health in metrics). */
  onSuccess?: (watch: string) => void;
  signal: AbortSignal;
  /** Also watch the intentions of the proxied service (GET /v1/connect/intentions/match). */
  watchIntentions?: boolean;
}

interface RunningWatch {
  controller: AbortController;
  done: Promise<void>;
}

export class SidecarWatches {
  readonly #opts: SidecarWatchesOptions;
  readonly #running = new Map<string, RunningWatch>();
  /** Watches told to stop that may still be finishing their last request. */
  readonly #stopping = new Set<Promise<void>>();
  #leafService: string | undefined;
  #intentionsTarget: string | undefined;

  constructor(opts: SidecarWatchesOptions) {
    this.#opts = opts;
  }

  start(): void {
    const { api, proxyId } = this.#opts;
    this.#startWatch<ProxyRegistration>(
      `registration:${proxyId}`,
      (cursor, signal) => api.proxyRegistration(proxyId, cursor, signal),
      (registration) => {
        this.#opts.emit({ kind: 'registration', value: registration });
        this.#syncLeaf(registration.serviceName);
        if (this.#opts.watchIntentions === true) this.#syncIntentions(registration.serviceName, registration.namespace);
        this.#syncTargets(registration.upstreams);
      },
    );
    this.#startWatch(
      'roots',
      (cursor, signal) => api.roots(cursor, signal),
      (roots) => this.#opts.emit({ kind: 'roots', value: roots }),
    );
  }

  /** Names of the running watches, for logs and tests. */
  running(): string[] {
    return [...this.#running.keys()].sort();
  }

  /** Resolves when every watch has stopped (after the root signal aborted). */
  async stopped(): Promise<void> {
    await Promise.all([...[...this.#running.values()].map((w) => w.done), ...this.#stopping]);
  }

  #syncLeaf(serviceName: string): void {
    if (this.#leafService === serviceName) return;
    if (this.#leafService !== undefined) this.#stopWatch(`leaf:${this.#leafService}`);
    this.#leafService = serviceName;
    const { api } = this.#opts;
    this.#startWatch(
      `leaf:${serviceName}`,
      (cursor, signal) => api.leaf(serviceName, cursor, signal),
      (leaf) => this.#opts.emit({ kind: 'leaf', value: leaf }),
    );
  }

  #syncIntentions(serviceName: string, namespace: string): void {
    const name = `intentions:${namespace === '' || namespace === 'default' ? '' : `${namespace}/`}${serviceName}`;
    if (this.#intentionsTarget === name) return;
    if (this.#intentionsTarget !== undefined) this.#stopWatch(this.#intentionsTarget);
    this.#intentionsTarget = name;
    const { api } = this.#opts;
    const target = { name: serviceName, namespace };
    this.#startWatch(
      name,
      (cursor, signal) => api.intentionsMatch(target, cursor, signal),
      (value) => this.#opts.emit({ kind: 'intentions', value }),
    );
  }

  /**
   * One watch per target the upstreams' chains use (two upstreams that reach the same target share
   * it): watches of targets no chain uses any more stop (and say so), new ones start, running ones
   * are left alone.
   */
  #syncTargets(upstreams: readonly Upstream[]): void {
    const { api, datacenter } = this.#opts;
    const wanted = new Map<string, Target>();
    for (const upstream of upstreams) {
      for (const target of trivialChain(upstream, datacenter).targets) wanted.set(`${TARGET_WATCH_PREFIX}${target.id}`, target);
    }
    for (const name of this.#running.keys()) {
      if (name.startsWith(TARGET_WATCH_PREFIX) && !wanted.has(name)) {
        this.#stopWatch(name);
        this.#opts.emit({ kind: 'target-removed', targetId: name.slice(TARGET_WATCH_PREFIX.length) });
      }
    }
    for (const [name, target] of wanted) {
      if (this.#running.has(name)) continue;
      const query = {
        destinationName: target.service,
        destinationNamespace: target.namespace,
        // The local datacenter is not named in the query, as Consul's own proxies ask.
        datacenter: target.datacenter === datacenter ? '' : target.datacenter,
      };
      const onValue = (value: Endpoint[]): void => this.#opts.emit({ kind: 'target-endpoints', targetId: target.id, value });
      if (target.kind === 'prepared_query') {
        this.#startWatch(name, async (_cursor, signal) => ({ value: await api.preparedQueryEndpoints(query, signal), cursor: {} }), onValue, PREPARED_QUERY_POLL_MS);
      } else {
        this.#startWatch(name, (cursor, signal) => api.upstreamEndpoints(query, cursor, signal), onValue);
      }
    }
  }

  #startWatch<T>(name: string, fetch: (cursor: Cursor, signal: AbortSignal) => Promise<Versioned<T>>, onValue: (value: T) => void, pollIntervalMs?: number): void {
    if (this.#running.has(name) || this.#opts.signal.aborted) return;
    const controller = new AbortController();
    const root = this.#opts.signal;
    const onRootAbort = (): void => controller.abort(root.reason);
    root.addEventListener('abort', onRootAbort, { once: true });
    const done = runWatch<T>({
      name,
      fetch,
      onValue,
      onError: (error, attempt) => this.#opts.onError({ watch: name, error, attempt, kind: 'fetch' }),
      onValueError: (error) => this.#opts.onError({ watch: name, error, attempt: 0, kind: 'consumer' }),
      onSuccess: () => this.#opts.onSuccess?.(name),
      signal: controller.signal,
      ...(pollIntervalMs !== undefined && { pollIntervalMs }),
    }).finally(() => root.removeEventListener('abort', onRootAbort));
    this.#running.set(name, { controller, done });
  }

  #stopWatch(name: string): void {
    const watch = this.#running.get(name);
    if (watch === undefined) return;
    this.#running.delete(name);
    watch.controller.abort(new Error(`watch ${name} stopped`));
    this.#stopping.add(watch.done);
    void watch.done.finally(() => this.#stopping.delete(watch.done));
  }
}
