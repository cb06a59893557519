/**
 * Intention evaluation for one source against the intentions of our destination, as Consul's
 * agent does it for POST /v1/agent/connect/authorize (agent/connect_authz.go in 1.16): the first
 * intention in precedence order whose source matches (connect.IntentionMatch with
 * IntentionMatchSource) decides; an L7 intention (with Permissions) denies an L4 connection; with no
 * match the ACL default policy decides. Pure: no clock, no I/O.
 */
import { DEFAULT_NAMESPACE, DEFAULT_PARTITION, WILDCARD, type Decision, type Intention, type SourceIdentity } from '../domain/intentions.js';

function orDefault(value: string | undefined, fallback: string): string {
  return value === undefined || value === '' ? fallback : value;
}

/** connect.IntentionMatch(..., IntentionMatchSource): peer, partition, namespace, name. */
export function sourceMatches(intention: Intention, source: SourceIdentity): boolean {
  if (intention.sourcePeer !== (source.peer ?? '')) return false;
  if (orDefault(intention.sourcePartition, DEFAULT_PARTITION) !== orDefault(source.partition, DEFAULT_PARTITION)) return false;
  const ns = orDefault(intention.sourceNamespace, DEFAULT_NAMESPACE);
  if (ns !== WILDCARD && ns !== orDefault(source.namespace, DEFAULT_NAMESPACE)) return false;
  return intention.sourceName === WILDCARD || intention.sourceName === source.service;
}

/**
 * Consul's Intention.UpdatePrecedence: 9..1 from how exact the destination and then the source
 * are (namespace and name). For fakes and tests; real intentions carry the servers' value.
 */
export function intentionPrecedence(i: Pick<Intention, 'sourceNamespace' | 'sourceName' | 'destinationNamespace' | 'destinationName'>): number {
  const exact = (ns: string, name: string): number => (ns === WILDCARD ? 0 : name === WILDCARD ? 1 : 2);
  const max = [3, 6, 9][exact(orDefault(i.destinationNamespace, DEFAULT_NAMESPACE), i.destinationName)] as number;
  return max - (2 - exact(orDefault(i.sourceNamespace, DEFAULT_NAMESPACE), i.sourceName));
}

export function describeIntention(i: Intention): string {
  const src = `${i.sourcePeer === '' ? '' : `peer:${i.sourcePeer}/`}${orDefault(i.sourceNamespace, DEFAULT_NAMESPACE)}/${i.sourceName}`;
  const what = i.permissions.length > 0 ? `L7 (${i.permissions.length} permission(s))` : i.action;
  return `${src} => ${orDefault(i.destinationNamespace, DEFAULT_NAMESPACE)}/${i.destinationName} (${what}, precedence ${i.precedence})`;
}

/**
 * Decides whether `source` may connect. The highest-precedence matching intention wins (ties:
 * the earlier one, i.e. the match endpoint's order), so the result does not depend on the caller
 * keeping that order.
 */
export function evaluate(source: SourceIdentity, intentions: readonly Intention[], defaultAllow: boolean): Decision {
  let best: Intention | undefined;
  for (const intention of intentions) {
    if ((best === undefined || intention.precedence > best.precedence) && sourceMatches(intention, source)) best = intention;
  }
  if (best === undefined) {
    return { allowed: defaultAllow, reason: `no intention matches; the default policy is ${defaultAllow ? 'allow' : 'deny'}` };
  }
  if (best.permissions.length > 0) {
    // As Consul's authorize endpoint: L7 permissions cannot be enforced on an L4 connection.
    return { allowed: false, reason: `matched L7 intention ${describeIntention(best)}: denied at L4`, intention: best };
  }
  const allowed = best.action === 'allow';
  return { allowed, reason: `matched intention ${describeIntention(best)}`, intention: best };
}
