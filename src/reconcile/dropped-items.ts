/**
 * What the reconciler says about items left out of the configuration (bad data from Consul about
 * one instance, upstream or root): a warning when an item is first left out or its reason changes,
 * an info line when it is back, at most MAX_DROPPED_ITEM_LOG_LINES lines per translation and one
 * summary line beyond that. A flapping instance cannot flood the logs.
 */
import type { DroppedItem } from '../domain/snapshot.js';
import type { Logger } from '../logger.js';

export const MAX_DROPPED_ITEM_LOG_LINES = 20;

export class DroppedItemLog {
  readonly #logger: Logger;
  /** Items left out by the last translation, by `<kind> <item>`. */
  #current = new Map<string, DroppedItem>();

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Takes the items the newest translation left out; returns those new (or with a new reason) since the last one, or undefined when nothing changed. */
  report(dropped: readonly DroppedItem[]): DroppedItem[] | undefined {
    const current = new Map(dropped.map((d) => [`${d.kind} ${d.item}`, d]));
    const added = [...current].filter(([key, d]) => this.#current.get(key)?.reason !== d.reason).map(([, d]) => d);
    const back = [...this.#current].filter(([key]) => !current.has(key)).map(([, d]) => d);
    this.#current = current;
    if (added.length === 0 && back.length === 0) return undefined;
    const lines = [
      ...added.map((d) => () => this.#logger.warn({ kind: d.kind, item: d.item, reason: d.reason }, `${d.kind} left out of the configuration; everything else keeps updating`)),
      ...back.map((d) => () => this.#logger.info({ kind: d.kind, item: d.item }, `${d.kind} no longer left out of the configuration`)),
    ];
    for (const line of lines.slice(0, MAX_DROPPED_ITEM_LOG_LINES)) line();
    if (lines.length > MAX_DROPPED_ITEM_LOG_LINES) {
      this.#logger.warn({ leftOut: added.length, back: back.length, total: current.size, logged: MAX_DROPPED_ITEM_LOG_LINES }, 'more items changed than logged one by one');
    }
    return added;
  }
}
