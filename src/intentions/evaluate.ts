/**
 * Intention evaluation for one source against the intentions of our destination, as Consul's
 * agent does it for POST /v1/agent/connect/authorize (agent/connect_authz.go in 1.16): the first
 * intention in precedence order whose source matches (connect.IntentionMatch with
 * IntentionMatchSource) decides; an L7 intention (with Permissions) denies an L4 connection; with no
 * match the ACL default policy decides. Pure: no clock, no I/O.
 *
 * On an HTTP listener the same winning intention decides each request (decideRequest): an L7 one
 * through its permissions in order, the first that matches deciding, and the default policy when
 * none does (Consul's documented rule, ../shared/L7.md "Decisions"); matchers as Envoy's RBAC.
 * An unenforceable intention (domain/intentions.ts) denies.
 */
import type { RE2JS } from 're2js';
import { re2 } from '../domain/re2.js';
import {
  DEFAULT_NAMESPACE,
  DEFAULT_PARTITION,
  WILDCARD,
  type Decision,
  type Intention,
  type IntentionSet,
  type L7Policy,
  l7Policy,
  type PermissionMatch,
  type PermissionRequest,
  type SourceIdentity,
} from '../domain/intentions.js';
import type { HeaderMatch } from '../domain/routes.js';

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
  const what = i.unenforceable !== undefined ? 'unenforceable' : i.permissions.length > 0 ? `L7 (${i.permissions.length} permission(s))` : i.action;
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
  if (best.unenforceable !== undefined) {
    return { allowed: false, reason: `matched intention ${describeIntention(best)}, which cannot be enforced (${best.unenforceable}): denied`, intention: best };
  }
  if (best.permissions.length > 0) {
    // As Consul's authorize endpoint: L7 permissions cannot be enforced on an L4 connection.
    return { allowed: false, reason: `matched L7 intention ${describeIntention(best)}: denied at L4`, intention: best, l7: l7Policy(best.permissions, defaultAllow) };
  }
  const allowed = best.action === 'allow';
  return { allowed, reason: `matched intention ${describeIntention(best)}`, intention: best };
}

const compiled = new Map<string, RE2JS>();
const MAX_COMPILED = 10_000;

/** RE2 full match (the pattern was checked when the permission was parsed). */
function fullMatch(pattern: string, value: string): boolean {
  let re = compiled.get(pattern);
  if (re === undefined) {
    re = re2().compile(pattern);
    if (compiled.size >= MAX_COMPILED) compiled.clear();
    compiled.set(pattern, re);
  }
  return re.matches(value);
}

/** Envoy's HeaderUtility::matchHeaders: every occurrence joined with ','; a missing header only matches an inverted Present. */
export function headerMatches(header: HeaderMatch, headers: PermissionRequest['headers']): boolean {
  const values = headers.filter(([name]) => name === header.name).map(([, value]) => value);
  if (values.length === 0) return header.invert && header.match.kind === 'present';
  const value = values.join(',');
  const m = header.match;
  let matched: boolean;
  switch (m.kind) {
    case 'present':
      matched = true;
      break;
    case 'exact':
      matched = value === m.value;
      break;
    case 'prefix':
      matched = value.startsWith(m.value);
      break;
    case 'suffix':
      matched = value.endsWith(m.value);
      break;
    case 'regex':
      matched = fullMatch(m.value, value);
      break;
  }
  return matched !== header.invert;
}

/** One permission's matchers against a request (all of them must match). */
export function permissionMatches(match: PermissionMatch | undefined, request: PermissionRequest): boolean {
  if (match === undefined) return true;
  const path = match.path;
  if (path !== undefined) {
    const ok = path.kind === 'exact' ? request.path === path.value : path.kind === 'prefix' ? request.path.startsWith(path.value) : fullMatch(path.value, request.path);
    if (!ok) return false;
  }
  if (match.methods.length > 0 && !match.methods.includes(request.method)) return false;
  return match.headers.every((header) => headerMatches(header, request.headers));
}

/** The first permission that matches decides; none: the default policy. */
export function decideL7(policy: L7Policy, request: PermissionRequest): boolean {
  for (const permission of policy.permissions) {
    if (permissionMatches(permission.http, request)) return permission.action === 'allow';
  }
  return policy.defaultAllow;
}

/** Whether `request` from `source` reaches the service on an HTTP listener (every protocol of the http family). */
export function decideRequest(source: SourceIdentity, request: PermissionRequest, set: IntentionSet): boolean {
  const decision = evaluate(source, set.intentions, set.defaultAllow);
  return decision.l7 === undefined ? decision.allowed : decideL7(decision.l7, request);
}
