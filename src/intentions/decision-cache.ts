/**
 * Intention decisions per source identity, cached: a connection's verdict is one Map lookup. The
 * cache is a bounded LRU (a Map in recency order) and is cleared whenever the intentions or the
 * default policy change. Until the first intention set arrives every decision is deny.
 */
import { evaluate } from './evaluate.js';
import { touchLru } from './lru.js';
import type { Decision, IntentionSet, SourceIdentity } from '../domain/intentions.js';

export const DEFAULT_MAX_ENTRIES = 10_000;

const NOT_LOADED: Decision = { allowed: false, reason: 'intentions are not loaded yet: deny' };

function keyOf(source: SourceIdentity): string {
  // Length-prefixed, so no name can forge another identity's key.
  const parts = [source.peer ?? '', source.partition, source.namespace, source.service];
  return parts.map((p) => `${p.length}:${p}`).join('|');
}

function fingerprint(set: IntentionSet): string {
  return JSON.stringify([set.defaultAllow, set.intentions]);
}

export class IntentionDecisions {
  readonly maxEntries: number;
  #set: IntentionSet | undefined;
  #fingerprint = '';
  readonly #cache = new Map<string, Decision>();
  #hits = 0;
  #misses = 0;

  constructor(options: { maxEntries?: number } = {}) {
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new RangeError(`maxEntries ${this.maxEntries} must be a positive integer`);
  }

  /** Installs a new intention set; returns true (and clears the cache) if it differs. */
  update(set: IntentionSet): boolean {
    const fp = fingerprint(set);
    if (this.#set !== undefined && fp === this.#fingerprint) return false;
    this.#set = structuredClone(set);
    this.#fingerprint = fp;
    this.#cache.clear();
    return true;
  }

  get loaded(): boolean {
    return this.#set !== undefined;
  }

  decide(source: SourceIdentity): Decision {
    const set = this.#set;
    if (set === undefined) return NOT_LOADED;
    const key = keyOf(source);
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      this.#hits += 1;
      touchLru(this.#cache, key, cached, this.maxEntries);
      return cached;
    }
    this.#misses += 1;
    const decision = evaluate(source, set.intentions, set.defaultAllow);
    touchLru(this.#cache, key, decision, this.maxEntries);
    return decision;
  }

  get stats(): { size: number; hits: number; misses: number } {
    return { size: this.#cache.size, hits: this.#hits, misses: this.#misses };
  }
}
