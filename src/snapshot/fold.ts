/**
 * The single owner of the snapshot. Watchers only emit tagged events; `apply` folds one into the
 * state and says whether anything changed. `snapshot()` returns an immutable copy, and only once
 * the snapshot is complete (registration, leaf, roots, and the intentions when they are enforced).
 * The mesh config entry is never waited for: Consul's defaults stand until it is read (a mesh
 * without the entry is normal).
 */
import { isDeepStrictEqual } from '../builtins.js';
import type { IntentionSet } from '../domain/intentions.js';
import type { ExposedCheck } from '../domain/expose.js';
import { chainOf } from '../domain/chain.js';
import {
  type Chain,
  DEFAULT_MESH_CONFIG,
  type Endpoint,
  type Leaf,
  type MeshConfig,
  type MissingPart,
  type ProxyRegistration,
  type Roots,
  type Snapshot,
  type SnapshotEvent,
  type Target,
} from '../domain/snapshot.js';

export type { MissingPart, SnapshotEvent } from '../domain/snapshot.js';

export interface SnapshotStateOptions {
  /** Intentions are part of a complete snapshot (default false: not enforced, never waited for). */
  enforceIntentions?: boolean;
}

export class SnapshotState {
  readonly #datacenter: string;
  #registration: ProxyRegistration | undefined;
  #leaf: Leaf | undefined;
  #roots: Roots | undefined;
  /** The chain of each registered upstream, by upstream key (recomputed with the registration). */
  #chains = new Map<string, Chain>();
  /** Endpoints of each target a chain uses, by target id; a target without an entry has no answer yet. */
  readonly #targets = new Map<string, readonly Endpoint[]>();
  readonly #enforceIntentions: boolean;
  #intentions: IntentionSet | undefined;
  #mesh: MeshConfig = { ...DEFAULT_MESH_CONFIG };
  /** Checks the agent reroutes through the sidecar (only read while Proxy.Expose.Checks is set). */
  #exposedChecks: readonly ExposedCheck[] = [];

  constructor(datacenter: string, options: SnapshotStateOptions = {}) {
    this.#datacenter = datacenter;
    this.#enforceIntentions = options.enforceIntentions ?? false;
  }

  get enforceIntentions(): boolean {
    return this.#enforceIntentions;
  }

  /** Folds one event in; returns true when the state changed. */
  apply(event: SnapshotEvent): boolean {
    switch (event.kind) {
      case 'registration': {
        if (isDeepStrictEqual(this.#registration, event.value)) return false;
        const before = this.serviceIdentity();
        this.#registration = structuredClone(event.value);
        // The proxy now fronts another service: the old service's leaf and intentions must not be
        // served or enforced for it. The snapshot is incomplete until the new ones arrive.
        if (before !== undefined && before !== this.serviceIdentity()) {
          this.#leaf = undefined;
          this.#intentions = undefined;
        }
        // A prepared query's chain is the query; a service upstream keeps its compiled chain until
        // its chain watch answers again (a new upstream has none until then).
        const chains = new Map<string, Chain>();
        for (const u of event.value.upstreams) {
          const chain = chainOf(u, this.#chains, this.#datacenter);
          if (chain !== undefined) chains.set(u.key, chain);
        }
        this.#chains = chains;
        this.#dropUnusedTargets();
        return true;
      }
      case 'chain': {
        const upstream = this.#registration?.upstreams.find((u) => u.key === event.upstreamKey);
        if (upstream === undefined || upstream.destinationType !== 'service') return false;
        if (isDeepStrictEqual(this.#chains.get(event.upstreamKey), event.value)) return false;
        this.#chains.set(event.upstreamKey, structuredClone(event.value));
        this.#dropUnusedTargets();
        return true;
      }
      case 'leaf':
        if (isDeepStrictEqual(this.#leaf, event.value)) return false;
        this.#leaf = structuredClone(event.value);
        return true;
      case 'roots':
        if (isDeepStrictEqual(this.#roots, event.value)) return false;
        this.#roots = structuredClone(event.value);
        return true;
      case 'target-endpoints': {
        if (!this.#usedTargets().has(event.targetId)) return false;
        if (isDeepStrictEqual(this.#targets.get(event.targetId), event.value)) return false;
        this.#targets.set(event.targetId, structuredClone(event.value));
        return true;
      }
      case 'target-removed':
        return this.#targets.delete(event.targetId);
      case 'intentions':
        // Not enforced: nothing reads them, so they never count as a change.
        if (!this.#enforceIntentions || isDeepStrictEqual(this.#intentions, event.value)) return false;
        this.#intentions = structuredClone(event.value);
        return true;
      case 'mesh':
        if (isDeepStrictEqual(this.#mesh, event.value)) return false;
        this.#mesh = structuredClone(event.value);
        return true;
      case 'exposed-checks':
        if (isDeepStrictEqual(this.#exposedChecks, event.value)) return false;
        this.#exposedChecks = structuredClone(event.value);
        return true;
    }
  }

  /** `<partition>/<namespace>/<service>` the proxy fronts (whose leaf and intentions it uses), once registered. */
  serviceIdentity(): string | undefined {
    const r = this.#registration;
    return r === undefined ? undefined : `${r.partition}/${r.namespace}/${r.serviceName}`;
  }

  missing(): MissingPart[] {
    const missing: MissingPart[] = [];
    if (this.#registration === undefined) missing.push('registration');
    if (this.#leaf === undefined) missing.push('leaf');
    if (this.#roots === undefined) missing.push('roots');
    if (this.#enforceIntentions && this.#intentions === undefined) missing.push('intentions');
    return missing;
  }

  /**
   * What the first configuration of an upstream still waits for: the ids of targets the chains
   * use without endpoints yet, and `chain:<upstream key>` for service upstreams without a chain yet.
   */
  targetsWithoutAnswer(): string[] {
    const chainless = (this.#registration?.upstreams ?? []).filter((u) => !this.#chains.has(u.key)).map((u) => `chain:${u.key}`);
    return [...chainless, ...[...this.#usedTargets()].filter((id) => !this.#targets.has(id))];
  }

  /** Endpoints of targets no chain uses any more are dropped with them. */
  #dropUnusedTargets(): void {
    const used = this.#usedTargets();
    for (const id of [...this.#targets.keys()]) if (!used.has(id)) this.#targets.delete(id);
  }

  /** Every target the chains use, by id (two upstreams may share one). */
  usedTargets(): Target[] {
    const byId = new Map<string, Target>();
    for (const chain of this.#chains.values()) for (const target of chain.targets) byId.set(target.id, target);
    return [...byId.values()];
  }

  #usedTargets(): Set<string> {
    return new Set(this.usedTargets().map((t) => t.id));
  }

  /** An immutable copy of the complete snapshot, or undefined while parts are missing. */
  snapshot(): Snapshot | undefined {
    if (this.#registration === undefined || this.#leaf === undefined || this.#roots === undefined) return undefined;
    if (this.#enforceIntentions && this.#intentions === undefined) return undefined;
    return deepFreeze({
      datacenter: this.#datacenter,
      registration: structuredClone(this.#registration),
      leaf: structuredClone(this.#leaf),
      roots: structuredClone(this.#roots),
      chains: new Map([...this.#chains].map(([k, v]) => [k, structuredClone(v)])),
      targets: new Map([...this.#targets].map(([k, v]) => [k, structuredClone(v)])),
      intentions: this.#enforceIntentions ? structuredClone(this.#intentions) : undefined,
      mesh: structuredClone(this.#mesh),
      ...(this.#exposedChecks.length > 0 && { exposedChecks: structuredClone(this.#exposedChecks) }),
    });
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    if (value instanceof Map) {
      for (const v of value.values()) deepFreeze(v);
    } else {
      for (const v of Object.values(value)) deepFreeze(v);
    }
    Object.freeze(value);
  }
  return value;
}
