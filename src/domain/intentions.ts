/**
 * Intentions as haproxy-connect uses them: the L4 view of Consul's `structs.Intention`, as returned
 * by GET /v1/connect/intentions/match?by=destination (already filtered to our destination).
 */

export const WILDCARD = '*';
export { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from './consul.js';

/** An L7 permission (HTTP matchers); kept opaque: any permission makes the intention deny at L4. */
export type IntentionPermission = Readonly<Record<string, unknown>>;

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

export interface Decision {
  allowed: boolean;
  /** Why, for logs: which intention matched, or that the default applied. */
  reason: string;
  /** The intention that decided, if one matched. */
  intention?: Intention;
}

/** What the intentions agent decided about one connection, and how long it took (metrics). */
export interface AuthorizationDecision {
  result: 'allow' | 'deny' | 'error';
  durationMs: number;
}
