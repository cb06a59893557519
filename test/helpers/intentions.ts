/** Intentions for tests: a source → `web` intention with OSS defaults, overridden by `fields`. */
import type { Intention } from '../../src/domain/intentions.js';
import { intentionPrecedence } from '../../src/intentions/evaluate.js';

export function intentionFrom(source: string, fields: Partial<Intention> = {}): Intention {
  const base: Intention = {
    sourceName: source,
    sourceNamespace: 'default',
    sourcePartition: '',
    sourcePeer: '',
    destinationName: 'web',
    destinationNamespace: 'default',
    destinationPartition: '',
    action: '',
    permissions: [],
    precedence: 0,
    ...fields,
  };
  return fields.precedence === undefined ? { ...base, precedence: intentionPrecedence(base) } : base;
}
