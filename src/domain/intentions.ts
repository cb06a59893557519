/**
 * Intentions as haproxy-connect uses them: Consul's `structs.Intention`, as returned by GET
 * /v1/connect/intentions/match?by=destination (already filtered to our destination), with the L7
 * permissions of 1.16.2 (path, header and method matchers; no Contains/IgnoreCase yet).
 *
 * Permission semantics are Envoy's RBAC as Consul generates it (agent/xds/rbac.go): the path is
 * matched without its query, raw; a header matcher reads every occurrence joined with ',' (see
 * domain/routes.ts); methods are matched exactly, case-sensitively.
 */
import { fnv1a32Hex } from './haproxy-names.js';
import type { HeaderMatch } from './routes.js';

export const WILDCARD = '*';
export { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from './consul.js';

/** What one permission matches: every part must match (an absent part matches everything). */
export interface PermissionMatch {
  path?: { kind: 'exact' | 'prefix' | 'regex'; value: string };
  headers: readonly HeaderMatch[];
  /** Upper case; empty: any method. */
  methods: readonly string[];
}

/** An L7 permission: `http` undefined matches every request (Consul's permission without HTTP). */
export interface IntentionPermission {
  action: 'allow' | 'deny';
  http?: PermissionMatch;
}

export interface Intention {
  sourceName: string;
  /** '' is read as 'default' (Consul OSS omits it in places); '*' is any namespace. */
  sourceNamespace: string;
  /** '' is read as 'default'. */
  sourcePartition: string;
  /** '' for local sources; a peer name for a source in a peered cluster. */
  sourcePeer: string;
  destinationName: string;
  destinationNamespace: string;
  destinationPartition: string;
  /** 'allow' or 'deny' for L4 intentions; '' for L7 intentions (which carry `permissions`). */
  action: 'allow' | 'deny' | '';
  permissions: IntentionPermission[];
  /** Consul's precedence (higher wins), computed by the servers. */
  precedence: number;
  /**
   * Why this intention cannot be enforced as written (a regex RE2 refuses, a JWT requirement, a
   * matcher 1.16.2 does not know): it then denies every source it matches, as Envoy refuses a
   * policy it cannot load. Absent: enforceable.
   */
  unenforceable?: string;
}

/** The intentions that apply to our destination and the default when none matches. */
export interface IntentionSet {
  /** As the match endpoint returns them: highest precedence first. */
  intentions: Intention[];
  /** Consul's default intention decision (the ACL default policy: `X-Consul-Default-ACL-Policy`). */
  defaultAllow: boolean;
}

/** Who is connecting: from the client certificate's SPIFFE ID. */
export interface SourceIdentity {
  service: string;
  namespace: string;
  partition: string;
  /** Absent or '' for a local source. */
  peer?: string;
}

/**
 * The permissions that decide the requests of a source whose best-matching intention is an L7 one,
 * with the default for a request no permission matches. `id` names the policy in haproxy.cfg and
 * in the agent's verdicts: a hash of the content, so equal policies share an id.
 */
export interface L7Policy {
  id: string;
  permissions: readonly IntentionPermission[];
  defaultAllow: boolean;
}

/** A request as permissions see it. */
export interface PermissionRequest {
  method: string;
  /** The path without its query (and fragment), raw. */
  path: string;
  /** Every header line in order, names in lower case. */
  headers: ReadonlyArray<readonly [string, string]>;
}

export interface Decision {
  /** The connection-level verdict: an L7 intention denies at L4. */
  allowed: boolean;
  /** The winning intention is an enforceable L7 one: on an HTTP listener, these permissions decide each request. */
  l7?: L7Policy;
  /** Why, for logs: which intention matched, or that the default applied. */
  reason: string;
  /** The intention that decided, if one matched. */
  intention?: Intention;
}

/** What the intentions agent decided about one connection, and how long it took (metrics). */
export interface AuthorizationDecision {
  /**
   * Per connection: allow, deny, l7 (each request is decided by an L7 policy), error (no identity
   * could be read). Per request, for L7 policies the agent decides: request_allow, request_deny.
   */
  result: 'allow' | 'deny' | 'l7' | 'error' | 'request_allow' | 'request_deny';
  durationMs: number;
}

/** The L7 policy of an intention's permissions under a default policy (its id hashes both). */
export function l7Policy(permissions: readonly IntentionPermission[], defaultAllow: boolean): L7Policy {
  const text = JSON.stringify([defaultAllow, permissions]);
  return { id: `p${fnv1a32Hex(text)}${fnv1a32Hex(`l7:${text}`).slice(0, 4)}`, permissions, defaultAllow };
}

/** The L7 policies the intentions of a set can name, in precedence order (as the set lists them). */
export function policiesOf(set: IntentionSet): Map<string, L7Policy> {
  const policies = new Map<string, L7Policy>();
  for (const intention of set.intentions) {
    if (intention.unenforceable !== undefined || intention.permissions.length === 0) continue;
    const policy = l7Policy(intention.permissions, set.defaultAllow);
    policies.set(policy.id, policy);
  }
  return policies;
}
