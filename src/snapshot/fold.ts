/**
 * The single owner of the snapshot. Watchers only emit tagged events; `apply` folds one into the
 * state and says whether anything changed. `snapshot()` returns an immutable copy, and only once
 * the snapshot is complete (registration, leaf, roots, and the intentions when they are enforced).
 */
import { isDeepStrictEqual } from 'node:util';
import type { IntentionSet } from '../domain/intentions.js';
import type { Endpoint, Leaf, MissingPart, ProxyRegistration, Roots, Snapshot, SnapshotEvent } from '../domain/snapshot.js';

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
  readonly #endpoints = new Map<string, readonly Endpoint[]>();
  readonly #enforceIntentions: boolean;
  #intentions: IntentionSet | undefined;
  #version = 0;

  constructor(datacenter: string, options: SnapshotStateOptions = {}) {
    this.#datacenter = datacenter;
    this.#enforceIntentions = options.enforceIntentions ?? false;
  }

  get enforceIntentions(): boolean {
    return this.#enforceIntentions;
  }

  /** Increases on every change; consumers compare versions instead of snapshots. */
  get version(): number {
    return this.#version;
  }

  /** Folds one event in; returns true when the state changed. */
  apply(event: SnapshotEvent): boolean {
    const changed = this.#fold(event);
    if (changed) this.#version++;
    return changed;
  }

  #fold(event: SnapshotEvent): boolean {
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
        // Endpoints of upstreams that are no longer registered are dropped with them.
        for (const key of [...this.#endpoints.keys()]) {
          if (!event.value.upstreams.some((u) => u.key === key)) this.#endpoints.delete(key);
        }
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
      case 'endpoints': {
        if (!this.#registration?.upstreams.some((u) => u.key === event.upstreamKey)) return false;
        if (isDeepStrictEqual(this.#endpoints.get(event.upstreamKey), event.value)) return false;
        this.#endpoints.set(event.upstreamKey, structuredClone(event.value));
        return true;
      }
      case 'upstream-removed':
        return this.#endpoints.delete(event.upstreamKey);
      case 'intentions':
        // Not enforced: nothing reads them, so they never count as a change.
        if (!this.#enforceIntentions || isDeepStrictEqual(this.#intentions, event.value)) return false;
        this.#intentions = structuredClone(event.value);
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

  /** Keys of registered upstreams whose endpoints have not been answered yet. */
  upstreamsWithoutAnswer(): string[] {
    return (this.#registration?.upstreams ?? []).map((u) => u.key).filter((key) => !this.#endpoints.has(key));
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
      endpoints: new Map([...this.#endpoints].map(([k, v]) => [k, structuredClone(v)])),
      intentions: this.#enforceIntentions ? structuredClone(this.#intentions) : undefined,
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
