/**
 * Drift: differences between what was applied and what HAProxy reports (`show servers state`,
 * `show ssl cert`). PURE; the reconcile loop reads the live state and repairs what this finds.
 */
import { X509Certificate } from 'node:crypto';
import type { HaproxyModel } from './model.js';
import { LEAF_FILE } from '../domain/haproxy-names.js';
import type { LiveServer } from './runtime-state.js';

/** Serial (upper-case hex, as HAProxy prints it) of the first certificate of the model's leaf file. */
export function leafSerial(model: HaproxyModel): string | undefined {
  const leaf = model.files.find((f) => f.name === LEAF_FILE);
  if (leaf === undefined) return undefined;
  return new X509Certificate(leaf.content).serialNumber.toUpperCase();
}

/**
 * Every difference in the upstream backends (the ones changed at runtime) and the leaf, as a readable line. `pendingDeletion` holds `backend/server` names that are
 * meant to be in maintenance until HAProxy lets us delete them.
 */
export function findDrift(applied: HaproxyModel, live: readonly LiveServer[], liveLeafSerial: string | undefined, pendingDeletion: ReadonlySet<string>): string[] {
  const drift: string[] = [];
  // Only upstream backends (TLS to peer sidecars) change at runtime; the rest only by reload.
  const upstreams = applied.backends.filter((b) => b.tls !== undefined);
  const liveByKey = new Map(live.filter((s) => upstreams.some((b) => b.name === s.backend)).map((s) => [`${s.backend}/${s.name}`, s]));
  for (const backend of upstreams) {
    for (const server of backend.servers) {
      const key = `${backend.name}/${server.name}`;
      const found = liveByKey.get(key);
      liveByKey.delete(key);
      if (found === undefined) drift.push(`server ${key} is missing`);
      else {
        if (found.address !== server.address || found.port !== server.port) drift.push(`server ${key} is at ${found.address}:${found.port}, not ${server.address}:${server.port}`);
        if (found.weight !== server.weight) drift.push(`server ${key} has weight ${found.weight}, not ${server.weight}`);
        if (found.maintenance) drift.push(`server ${key} is in maintenance`);
      }
    }
  }
  for (const key of liveByKey.keys()) {
    if (!pendingDeletion.has(key)) drift.push(`server ${key} should not exist`);
  }
  const wanted = leafSerial(applied);
  if (wanted !== undefined && liveLeafSerial !== undefined && liveLeafSerial.toUpperCase() !== wanted) {
    drift.push(`leaf serial is ${liveLeafSerial}, not ${wanted}`);
  }
  return drift;
}
