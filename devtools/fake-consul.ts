/**
 * An in-process fake of the Consul agent for tests. Tests set values (each set bumps a global
 * index, like Consul's Raft index); blocking calls wait until the value's index moves past the
 * cursor, the test expires blocked queries, or the signal aborts. The next N calls can be made to
 * fail with a given error.
 */
import { HaproxyConnectError } from '../src/errors.js';
import type { IntentionSet } from '../src/domain/intentions.js';
import type { ExposedCheck } from '../src/domain/expose.js';
import { type Chain, DEFAULT_MESH_CONFIG, type Endpoint, type Leaf, type MeshConfig, type ProxyRegistration, type Roots } from '../src/domain/snapshot.js';
import type { AgentInfo, ChainQuery, ConsulAgentApi, Cursor, IntentionTarget, ProxyServiceSummary, ServiceDefinition, UpstreamQuery, Versioned } from '../src/consul/api.js';

export type FakeMethod = Exclude<keyof ConsulAgentApi, 'address'>;

interface Entry<T> {
  value: T;
  index: number;
}

interface Failure {
  remaining: number;
  error: Error;
  method: FakeMethod | undefined;
}

function endpointsKey(q: UpstreamQuery): string {
  return `${q.destinationNamespace || 'default'}/${q.destinationName}@${q.datacenter}`;
}

function intentionsKey(t: IntentionTarget): string {
  return `${t.namespace || 'default'}/${t.name}`;
}

/** Consul's answer for a destination without intentions on a dev agent without ACLs. */
const NO_INTENTIONS: IntentionSet = { intentions: [], defaultAllow: true };

/** structuredClone keeps the fake's state from being mutated through returned values. */
function copy<T>(value: T): T {
  return structuredClone(value);
}

export class FakeConsulAgentApi implements ConsulAgentApi {
  readonly address = 'fake://consul-agent';
  /** Every call, in order, for assertions (`method` and its main argument). */
  readonly calls: Array<{ method: FakeMethod; arg: string; cursor: Cursor | undefined }> = [];

  /** Starts at 1: Consul never reports index 0, and an absent value reads at the current index. */
  #index = 1;
  #agent: AgentInfo = { datacenter: 'dc1', nodeName: 'node1' };
  #proxies: ProxyServiceSummary[] = [];
  readonly #registrations = new Map<string, Entry<ProxyRegistration>>();
  readonly #leaves = new Map<string, Entry<Leaf>>();
  #roots: Entry<Roots> | undefined;
  readonly #endpoints = new Map<string, Entry<Endpoint[]>>();
  readonly #preparedQueries = new Map<string, Endpoint[]>();
  readonly #intentions = new Map<string, Entry<IntentionSet>>();
  /** The mesh config entry; undefined: none (Consul answers 404, read as the defaults). */
  #mesh: Entry<MeshConfig> | undefined;
  /** Checks rerouted through a sidecar (Proxy.Expose.Checks), by service ID. */
  readonly #exposedChecks = new Map<string, ExposedCheck[]>();
  /** Index of the last write or delete of the mesh entry (Consul's config-entries table index). */
  #meshIndex = 1;
  /** Chains set by tests, by `<service>@<compile datacenter>`; others are Consul's default chain. */
  readonly #chains = new Map<string, Entry<Chain>>();
  readonly #failures: Failure[] = [];
  readonly #services = new Map<string, ServiceDefinition>();
  readonly #waiters = new Set<() => void>();
  #expiry = 0;

  // --- test controls -------------------------------------------------------------------------

  setAgent(agent: AgentInfo): void {
    this.#agent = copy(agent);
  }

  setProxyServices(proxies: ProxyServiceSummary[]): void {
    this.#proxies = copy(proxies);
  }

  setRegistration(registration: ProxyRegistration): void {
    this.#registrations.set(registration.proxyId, { value: copy(registration), index: this.#bump() });
    this.#wake();
  }

  removeRegistration(proxyId: string): void {
    this.#registrations.delete(proxyId);
    this.#bump();
    this.#wake();
  }

  setLeaf(serviceName: string, leaf: Leaf): void {
    this.#leaves.set(serviceName, { value: copy(leaf), index: this.#bump() });
    this.#wake();
  }

  setRoots(roots: Roots): void {
    this.#roots = { value: copy(roots), index: this.#bump() };
    this.#wake();
  }

  setEndpoints(query: UpstreamQuery, endpoints: Endpoint[]): void {
    this.#endpoints.set(endpointsKey(query), { value: copy(endpoints), index: this.#bump() });
    this.#wake();
  }

  setPreparedQuery(name: string, endpoints: Endpoint[]): void {
    this.#preparedQueries.set(name, copy(endpoints));
  }

  /**
   * The intentions of a destination and the default decision. Stored in precedence order (highest
   * first, stable), as the match endpoint returns them.
   */
  setIntentions(target: IntentionTarget, set: IntentionSet): void {
    const sorted = [...set.intentions].sort((a, b) => b.precedence - a.precedence);
    this.#intentions.set(intentionsKey(target), { value: copy({ ...set, intentions: sorted }), index: this.#bump() });
    this.#wake();
  }

  /** Writes (a value) or deletes (undefined) the mesh config entry. */
  setMeshConfig(mesh: MeshConfig | undefined): void {
    const index = this.#bump();
    this.#mesh = mesh === undefined ? undefined : { value: copy(mesh), index };
    this.#meshIndex = index;
    this.#wake();
  }

  /** The next `count` calls (of `method`, or of any method) reject with `error`. */
  failNext(count: number, error: Error, method?: FakeMethod): void {
    this.#failures.push({ remaining: count, error, method });
  }

  /** Makes every blocked call return its current value, as when Consul's wait time runs out. */
  expireBlockingQueries(): void {
    this.#expiry += 1;
    this.#wake();
  }

  /** Number of calls currently blocked (poll this to know a watcher is waiting). */
  get blockedCalls(): number {
    return this.#waiters.size;
  }

  /** Services registered through registerService (by ID), as the agent would hold them. */
  get services(): ReadonlyMap<string, ServiceDefinition> {
    return this.#services;
  }

  callsOf(method: FakeMethod): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  // --- ConsulAgentApi ------------------------------------------------------------------------

  async agentSelf(signal: AbortSignal): Promise<AgentInfo> {
    this.#enter('agentSelf', '', undefined, signal);
    return copy(this.#agent);
  }

  async listProxyServices(signal: AbortSignal): Promise<ProxyServiceSummary[]> {
    this.#enter('listProxyServices', '', undefined, signal);
    return copy(this.#proxies);
  }

  async proxyRegistration(proxyId: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<ProxyRegistration>> {
    this.#enter('proxyRegistration', proxyId, cursor, signal);
    const entry = await this.#block(
      () => this.#registrations.get(proxyId) ?? null,
      (e) => e !== null && String(e.index) === cursor.hash,
      cursor.hash !== undefined && cursor.hash !== '',
      signal,
    );
    if (entry === null) {
      throw new HaproxyConnectError('SIDECAR_NOT_FOUND', `No service with ID '${proxyId}' is registered on the Consul agent at ${this.address}`);
    }
    return { value: copy(entry.value), cursor: { hash: String(entry.index) } };
  }

  async leaf(serviceName: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Leaf>> {
    this.#enter('leaf', serviceName, cursor, signal);
    const entry = await this.#present(() => this.#leaves.get(serviceName), cursor, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  async roots(cursor: Cursor, signal: AbortSignal): Promise<Versioned<Roots>> {
    this.#enter('roots', '', cursor, signal);
    const entry = await this.#present(() => this.#roots, cursor, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  async upstreamEndpoints(query: UpstreamQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Endpoint[]>> {
    this.#enter('upstreamEndpoints', endpointsKey(query), cursor, signal);
    // Consul answers an unknown service with an empty list, at the current index.
    const read = (): Entry<Endpoint[]> => this.#endpoints.get(endpointsKey(query)) ?? { value: [], index: this.#index };
    const entry = await this.#block(read, (e) => e.index <= (cursor.index ?? 0), (cursor.index ?? 0) > 0, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  /**
   * The chain a test set for `<service>@<datacenter>` ('' = local), else what Consul compiles
   * without config entries: one target, the service in the compile datacenter, with the
   * upstream's connect timeout (or Consul's 5 s).
   */
  async discoveryChain(query: ChainQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Chain>> {
    this.#enter('discoveryChain', `${query.name}@${query.datacenter}`, cursor, signal);
    const dc = query.datacenter === '' ? query.localDatacenter : query.datacenter;
    const fallback: Chain = {
      targets: [
        {
          id: `${query.name}.default.default.${dc}`,
          kind: 'service',
          service: query.name,
          namespace: 'default',
          partition: 'default',
          datacenter: dc,
          filter: '',
          onlyPassing: false,
          connectTimeoutMs: query.overrideConnectTimeoutMs ?? 5_000,
          meshGatewayMode: '',
        },
      ],
    };
    const read = (): Entry<Chain> => this.#chains.get(`${query.name}@${query.datacenter}`) ?? { value: fallback, index: 1 };
    const entry = await this.#block(read, (e) => e.index <= (cursor.index ?? 0), (cursor.index ?? 0) > 0, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  /** Sets the compiled chain of `service` as asked from `datacenter` ('' = local). */
  setChain(service: string, datacenter: string, chain: Chain): void {
    this.#chains.set(`${service}@${datacenter}`, { value: copy(chain), index: this.#bump() });
    this.#wake();
  }

  async preparedQueryEndpoints(query: UpstreamQuery, signal: AbortSignal): Promise<Endpoint[]> {
    this.#enter('preparedQueryEndpoints', query.destinationName, undefined, signal);
    const endpoints = this.#preparedQueries.get(query.destinationName);
    if (endpoints === undefined) {
      throw new HaproxyConnectError('CONSUL_HTTP', `Consul agent at ${this.address} answered GET /v1/query/${query.destinationName}/execute with HTTP 404: query not found`);
    }
    return copy(endpoints);
  }

  async intentionsMatch(destination: IntentionTarget, cursor: Cursor, signal: AbortSignal): Promise<Versioned<IntentionSet>> {
    this.#enter('intentionsMatch', intentionsKey(destination), cursor, signal);
    const read = (): Entry<IntentionSet> => this.#intentions.get(intentionsKey(destination)) ?? { value: NO_INTENTIONS, index: this.#index };
    const entry = await this.#block(read, (e) => e.index <= (cursor.index ?? 0), (cursor.index ?? 0) > 0, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  /** The entry, or Consul's defaults when there is none, at the index of its last write or delete. */
  async meshConfig(cursor: Cursor, signal: AbortSignal): Promise<Versioned<MeshConfig>> {
    this.#enter('meshConfig', '', cursor, signal);
    const read = (): Entry<MeshConfig> => this.#mesh ?? { value: { ...DEFAULT_MESH_CONFIG }, index: this.#meshIndex };
    const entry = await this.#block(read, (e) => e.index <= (cursor.index ?? 0), (cursor.index ?? 0) > 0, signal);
    return { value: copy(entry.value), cursor: { index: entry.index } };
  }

  /** Sets the checks of `serviceId` the agent sends through the sidecar (polled, not blocking). */
  setExposedChecks(serviceId: string, checks: ExposedCheck[]): void {
    this.#exposedChecks.set(serviceId, copy(checks));
  }

  async exposedChecks(serviceId: string, signal: AbortSignal): Promise<ExposedCheck[]> {
    this.#enter('exposedChecks', serviceId, undefined, signal);
    return copy(this.#exposedChecks.get(serviceId) ?? []);
  }

  async registerService(service: ServiceDefinition, signal: AbortSignal): Promise<void> {
    this.#enter('registerService', service.id, undefined, signal);
    this.#services.set(service.id, copy(service));
  }

  async deregisterService(serviceId: string, signal: AbortSignal): Promise<void> {
    this.#enter('deregisterService', serviceId, undefined, signal);
    this.#services.delete(serviceId);
  }

  // --- internals -----------------------------------------------------------------------------

  #bump(): number {
    this.#index += 1;
    return this.#index;
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  /** Records the call, then throws a scheduled failure or the abort reason. */
  #enter(method: FakeMethod, arg: string, cursor: Cursor | undefined, signal: AbortSignal): void {
    this.calls.push({ method, arg, cursor: cursor === undefined ? undefined : { ...cursor } });
    signal.throwIfAborted();
    const failure = this.#failures.find((f) => f.remaining > 0 && (f.method === undefined || f.method === method));
    if (failure !== undefined) {
      failure.remaining -= 1;
      throw failure.error;
    }
  }

  /** Blocks while the value is absent (like a leaf or roots not issued yet) or unchanged. */
  async #present<T>(read: () => Entry<T> | undefined, cursor: Cursor, signal: AbortSignal): Promise<Entry<T>> {
    const since = cursor.index ?? 0;
    const entry = await this.#block(
      () => read() ?? null,
      (e) => e === null || e.index <= since,
      true,
      signal,
      true,
    );
    if (entry === null) throw new Error('unreachable: blocked until present');
    return entry;
  }

  /**
   * Returns `read()` once `unchanged` is false. Only blocks when `blocking`; an expiry releases
   * the wait with the current value (unless `mustExist` and the value is still absent).
   */
  #block<E>(read: () => E, unchanged: (e: E) => boolean, blocking: boolean, signal: AbortSignal, mustExist = false): Promise<E> {
    const first = read();
    if (!blocking || !unchanged(first)) return Promise.resolve(first);
    const startExpiry = this.#expiry;
    return new Promise<E>((resolve, reject) => {
      const cleanup = (): void => {
        this.#waiters.delete(check);
        signal.removeEventListener('abort', onAbort);
      };
      const check = (): void => {
        const current = read();
        const expired = this.#expiry !== startExpiry && (!mustExist || current !== null);
        if (expired || !unchanged(current)) {
          cleanup();
          resolve(current);
        }
      };
      const onAbort = (): void => {
        cleanup();
        reject(signal.reason);
      };
      this.#waiters.add(check);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
