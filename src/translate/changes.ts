/**
 * Human-readable reasons for a configuration change (every reload states why). Pure.
 */
import type { HaproxyModel } from '../haproxy/model.js';
import { isDeepStrictEqual } from 'node:util';

export function describeChanges(before: HaproxyModel, after: HaproxyModel): string[] {
  const reasons: string[] = [];
  diffNamed('frontend', before.frontends, after.frontends, reasons);
  diffNamed('backend', before.backends, after.backends, reasons);
  const beforeFiles = new Map(before.files.map((f) => [f.name, f]));
  for (const file of after.files) {
    const old = beforeFiles.get(file.name);
    if (old === undefined) reasons.push(`file ${file.name} added`);
    else if (old.content !== file.content || old.mode !== file.mode) reasons.push(`file ${file.name} changed`);
    beforeFiles.delete(file.name);
  }
  for (const name of beforeFiles.keys()) reasons.push(`file ${name} removed`);
  if (!isDeepStrictEqual(before.global, after.global)) reasons.push('global settings changed');
  return reasons.length > 0 ? reasons : ['configuration text changed'];
}

function diffNamed<T extends { name: string; servers?: unknown }>(kind: string, before: readonly T[], after: readonly T[], reasons: string[]): void {
  const old = new Map(before.map((x) => [x.name, x]));
  for (const item of after) {
    const prev = old.get(item.name);
    if (prev === undefined) reasons.push(`${kind} ${item.name} added`);
    else if (!isDeepStrictEqual(prev, item)) {
      const { servers: s1, ...rest1 } = prev;
      const { servers: s2, ...rest2 } = item;
      reasons.push(isDeepStrictEqual(rest1, rest2) && !isDeepStrictEqual(s1, s2) ? `${kind} ${item.name} servers changed` : `${kind} ${item.name} changed`);
    }
    old.delete(item.name);
  }
  for (const name of old.keys()) reasons.push(`${kind} ${name} removed`);
}
