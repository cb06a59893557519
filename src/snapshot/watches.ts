/**
 * Starts and stops the Consul watches of one sidecar, a keyed set in levels: its proxy
 * registration, its leaf (and, when enforced, its service's intentions, which follow the same
 * service name), the CA roots, and the mesh config entry while the public listener speaks HTTP or
 * HTTP/2 (the only listeners whose x-forwarded-client-cert it decides); from the registration,
 * one discovery-chain watch per service upstream; from the chains, one watch per target, started
 * and stopped as the chains change, keyed by target id (starting one that runs is a no-op).
 * Watches only emit tagged events; SnapshotState owns the data.
 */
import type { ChainQuery, ConsulAgentApi, Cursor, Versioned } from '../consul/api.js';
import { runWatch } from '../consul/watch.js';
import { HaproxyConnectError } from '../errors.js';
import type { SnapshotEvent } from './fold.js';
import { chainOf } from '../domain/chain.js';
import type { Chain, Endpoint, Protocol, ProxyRegistration, Target, Upstream } from '../domain/snapshot.js';
import type { ExposedCheck } from '../domain/expose.js';

/** Watches of upstream targets are named `target:<target id>`. */
export const TARGET_WATCH_PREFIX = 'target:';
/** Watches of discovery chains are named `chain:<upstream key>`. */
export const CHAIN_WATCH_PREFIX = 'chain:';
/** The watch of the mesh config entry. */
export const MESH_WATCH = 'mesh';
/** Prepared queries cannot block: poll them at this interval. */
export const PREPARED_QUERY_POLL_MS = 10_000;
/** The watch of the service's checks rerouted through the sidecar is named `exposed-checks:<service id>`. */
export const EXPOSED_CHECKS_WATCH_PREFIX = 'exposed-checks:';
/**
 * GET /v1/agent/checks cannot block: with Proxy.Expose.Checks it is polled this often (an answer
 * that changes nothing is not an event). A new check's path is known after the agent first ran it.
 */
export const EXPOSED_CHECKS_POLL_MS = 2_000;

export interface WatchErrorReport {
  watch: string;
  error: Error;
  /** Consecutive failed requests; 0 when the request succeeded but applying its value threw (`consumer`). */
  attempt: number;
  /** `fetch`: the request failed (retried with backoff); `consumer`: folding the answer in threw (the answer is dropped). */
  kind: 'fetch' | 'consumer';
  /** For chain and target watches: the keys of the upstreams that use it (they keep their last good state). */
  upstreams?: string[];
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
  /**
   * Refuses (throws) a chain the data plane cannot configure: that answer is dropped as a consumer
   * error and the upstream keeps its last good chain, as Envoy keeps its last good routes.
   */
  checkChain?: (upstreamKey: string, chain: Chain) => void;
  /** How often the exposed checks are polled (EXPOSED_CHECKS_POLL_MS when absent). */
  exposedChecksPollMs?: number;
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
  /** The registration's upstreams, as last answered. */
  #upstreams: readonly Upstream[] = [];
  /** The question each running chain watch asks (JSON), by watch name. */
  readonly #chainQuestions = new Map<string, string>();
  /** The last chain answered for each service upstream, by upstream key. */
  readonly #chains = new Map<string, Chain>();
  /** The subset filter each running target watch asks with, by watch name. */
  readonly #targetFilters = new Map<string, string>();

  constructor(opts: SidecarWatchesOptions) {
    this.#opts = opts;
    // One listener on the root signal for all watches: one per watch passed Node's limit of 10
    // listeners from four upstreams on (a MaxListenersExceededWarning on stderr at every start).
    opts.signal.addEventListener(
      'abort',
      () => {
        for (const watch of this.#running.values()) watch.controller.abort(opts.signal.reason);
      },
      { once: true },
    );
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
        this.#syncMesh(registration.publicListener.protocol);
        this.#syncExposedChecks(registration.expose?.checks === true ? registration.serviceId : undefined);
        this.#upstreams = registration.upstreams;
        this.#syncChains(registration.upstreams);
        this.#syncTargets();
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
   * The mesh config entry decides whether an HTTP public listener forwards x-forwarded-client-cert
   * (Consul 1.16.2 agent/xds/listeners.go: http and http2 only; gRPC and TCP never do): watched
   * while the listener speaks one of those, so other sidecars hold no extra blocking query.
   */
  #syncMesh(protocol: Protocol): void {
    const wanted = protocol === 'http' || protocol === 'http2';
    if (wanted === this.#running.has(MESH_WATCH)) return;
    if (!wanted) {
      this.#stopWatch(MESH_WATCH);
      return;
    }
    const { api } = this.#opts;
    this.#startWatch(
      MESH_WATCH,
      (cursor, signal) => api.meshConfig(cursor, signal),
      (value) => this.#opts.emit({ kind: 'mesh', value }),
    );
  }

  /**
   * With Proxy.Expose.Checks, the service's checks that the agent sends through the sidecar
   * (`exposed-checks:<service id>`, polled); none otherwise. An HTTP check whose output names no
   * URL for a moment (the agent rewrote it) keeps the path it had, so the listener does not flap.
   */
  #syncExposedChecks(serviceId: string | undefined): void {
    const name = serviceId === undefined ? undefined : `${EXPOSED_CHECKS_WATCH_PREFIX}${serviceId}`;
    for (const running of this.#running.keys()) {
      if (running.startsWith(EXPOSED_CHECKS_WATCH_PREFIX) && running !== name) {
        this.#stopWatch(running);
        this.#opts.emit({ kind: 'exposed-checks', value: [] });
      }
    }
    if (serviceId === undefined || name === undefined || this.#running.has(name)) return;
    const { api } = this.#opts;
    let last: readonly ExposedCheck[] = [];
    const fetch = async (_cursor: Cursor, signal: AbortSignal): Promise<Versioned<ExposedCheck[]>> => {
      const checks = (await api.exposedChecks(serviceId, signal)).map((c) => {
        if (c.path !== undefined) return c;
        const known = last.find((p) => p.checkId === c.checkId && p.exposedPort === c.exposedPort);
        return known === undefined ? c : { ...c, path: known.path };
      });
      last = checks;
      return { value: checks, cursor: {} };
    };
    this.#startWatch(name, fetch, (value) => this.#opts.emit({ kind: 'exposed-checks', value }), this.#opts.exposedChecksPollMs ?? EXPOSED_CHECKS_POLL_MS);
  }

  /**
   * One chain watch per service upstream (`chain:<upstream key>`), asked with the upstream's
   * protocol and connect timeout; a changed question restarts it, a removed upstream stops it.
   * Prepared queries have no chain: their one target is the query.
   */
  #syncChains(upstreams: readonly Upstream[]): void {
    const { api, datacenter } = this.#opts;
    const wanted = new Map<string, { upstream: Upstream; query: ChainQuery }>();
    for (const upstream of upstreams) {
      if (upstream.destinationType !== 'service') continue;
      const query: ChainQuery = {
        upstream: upstream.key,
        name: upstream.destinationName,
        datacenter: upstream.datacenter,
        localDatacenter: datacenter,
        // As Consul's own proxies ask: a tcp upstream's chain drops routers and splitters, an HTTP
        // one keeps them (and Consul refuses a chain whose services disagree on the protocol).
        overrideProtocol: upstream.protocol,
        overrideConnectTimeoutMs: upstream.configuredConnectTimeoutMs,
      };
      wanted.set(`${CHAIN_WATCH_PREFIX}${upstream.key}`, { upstream, query });
    }
    for (const [name, question] of [...this.#chainQuestions]) {
      const now = wanted.get(name);
      if (now !== undefined && JSON.stringify(now.query) === question) continue;
      this.#stopWatch(name);
      this.#chainQuestions.delete(name);
      if (now === undefined) this.#chains.delete(name.slice(CHAIN_WATCH_PREFIX.length));
    }
    for (const [name, { upstream, query }] of wanted) {
      if (this.#chainQuestions.has(name)) continue;
      this.#chainQuestions.set(name, JSON.stringify(query));
      this.#startWatch(
        name,
        (cursor, signal) => api.discoveryChain(query, cursor, signal),
        (chain) => {
          // Refused once per answer (a consumer error); the upstream keeps its last good chain.
          if (chain.invalid !== undefined) throw new HaproxyConnectError('CONSUL_RESPONSE_INVALID', chain.invalid);
          this.#opts.checkChain?.(upstream.key, chain);
          this.#chains.set(upstream.key, chain);
          this.#opts.emit({ kind: 'chain', upstreamKey: upstream.key, value: chain });
          this.#syncTargets();
        },
      );
    }
  }

  /**
   * One watch per target the upstreams' chains use (two upstreams that reach the same target share
   * it), keyed by target id: watches of targets no chain uses any more stop (and say so), new ones
   * start, running ones are left alone unless their subset filter changed.
   */
  #syncTargets(): void {
    const { api, datacenter } = this.#opts;
    const wanted = new Map<string, Target>();
    for (const upstream of this.#upstreams) {
      const chain = chainOf(upstream, this.#chains, datacenter);
      for (const target of chain?.targets ?? []) wanted.set(`${TARGET_WATCH_PREFIX}${target.id}`, target);
    }
    for (const [name, filter] of [...this.#targetFilters]) {
      const target = wanted.get(name);
      if (target !== undefined && (target.filter ?? '') === filter) continue;
      this.#stopWatch(name);
      this.#targetFilters.delete(name);
      if (target === undefined) this.#opts.emit({ kind: 'target-removed', targetId: name.slice(TARGET_WATCH_PREFIX.length) });
    }
    for (const [name, target] of wanted) {
      if (this.#targetFilters.has(name)) continue;
      this.#targetFilters.set(name, target.filter ?? '');
      const query = {
        destinationName: target.service,
        destinationNamespace: target.namespace,
        // The local datacenter is not named in the query, as Consul's own proxies ask.
        datacenter: target.datacenter === datacenter ? '' : target.datacenter,
        ...(target.filter !== undefined && target.filter !== '' && { filter: target.filter }),
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
    const done = runWatch<T>({
      name,
      fetch,
      onValue,
      onError: (error, attempt) => this.#opts.onError({ watch: name, error, attempt, kind: 'fetch', ...this.#concerns(name) }),
      onValueError: (error) => this.#opts.onError({ watch: name, error, attempt: 0, kind: 'consumer', ...this.#concerns(name) }),
      onSuccess: () => this.#opts.onSuccess?.(name),
      signal: controller.signal,
      ...(pollIntervalMs !== undefined && { pollIntervalMs }),
    });
    this.#running.set(name, { controller, done });
  }

  /** The upstreams a chain or target watch serves, for its error reports. */
  #concerns(name: string): { upstreams?: string[] } {
    if (name.startsWith(CHAIN_WATCH_PREFIX)) return { upstreams: [name.slice(CHAIN_WATCH_PREFIX.length)] };
    if (!name.startsWith(TARGET_WATCH_PREFIX)) return {};
    const id = name.slice(TARGET_WATCH_PREFIX.length);
    const upstreams = this.#upstreams.filter((u) => chainOf(u, this.#chains, this.#opts.datacenter)?.targets.some((t) => t.id === id)).map((u) => u.key);
    return { upstreams };
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
