/**
 * A bounded LRU on a plain Map (a Map iterates in insertion order): touching a key re-inserts it
 * at the end, and past `max` entries the oldest goes.
 */
export function touchLru<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done !== true) map.delete(oldest.value);
  }
}
