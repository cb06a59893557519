/**
 * The SPOE handler that authorizes connections to our public listener: client certificate (DER,
 * already verified by HAProxy against the Consul roots) → exactly one URI SAN → a Consul service
 * SPIFFE ID in OUR trust domain → the cached intention decision. No Consul request on this path:
 * decisions come from the intentions the watch keeps fresh (decision-cache.ts).
 *
 * It answers `authorize` (and `reauthorize`, the same question asked again when the epoch moved on
 * while it answered) with session variables: `auth` (1 allow / 0 deny), `epoch` (echoed, so HAProxy asks
 * again after the intentions change) and the caller's identity for later L7 rules. Anything it
 * cannot read is denied. It also remembers which source address:port belongs to which allowed
 * identity, so connections that a new intention denies can be found and closed (`show sess` lists
 * the source address, not the identity). HAProxy does not tell us when a connection ends, so that
 * record is a bounded LRU: stale entries only cost a lookup.
 */
import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { SPOE_ARG, SPOE_AUTH, SPOE_MESSAGE, SPOE_PERMISSIONS_ARG, SPOE_PERMISSIONS_MESSAGE, SPOE_REAUTHORIZE_MESSAGE, SPOE_VAR } from '../domain/haproxy-names.js';
import { decodeHdrsBin } from '../spoe/hdrs-bin.js';
import { decideL7 } from './evaluate.js';
import { splitDerCertificates, xfccElement } from './xfcc.js';
import { spiffeIdOfCertificate } from '../spiffe/san.js';
import type { ServiceSpiffeId } from '../spiffe/spiffe-id.js';
import type { SpoeAction, SpoeMessage, TypedData } from '../spoe/types.js';
import { type Logger, silentLogger } from '../logger.js';
import { IntentionDecisions } from './decision-cache.js';
import { touchLru } from './lru.js';
import { type IntentionSet, type L7Policy, type SourceIdentity, policiesOf } from '../domain/intentions.js';

/** Allowed connections remembered for closing them later (oldest forgotten first). */
export const DEFAULT_MAX_TRACKED_CONNECTIONS = 100_000;
/** Parsed client certificates (by DER bytes): sidecars reuse one leaf for many connections. */
export const DEFAULT_MAX_CACHED_CERTIFICATES = 1_000;
/**
 * How long an L7 policy the intentions no longer hold still decides the requests of sessions that
 * were given it. The agent has the new intentions before HAProxy's epoch moves on (the runtime
 * update follows the reconcile), and until then a session's verdict "policy P" is current: its
 * requests keep asking about P, and refusing them as "unknown policy" denied requests that the old
 * and the new intentions both allow (measured: 185 of 109,584 keep-alive requests through 20
 * changes of an agent-decided policy, a few milliseconds after each). Once the epoch moved, those
 * sessions are asked again and get the new policy, so a retired policy is never asked about for
 * long; this bounds how long one is kept.
 */
export const RETIRED_POLICY_MS = 30_000;

export interface AuthorizerOptions {
  logger?: Logger;
  maxTrackedConnections?: number;
  maxCachedCertificates?: number;
  /** Told every verdict and how long it took (metrics). Must not throw. */
  onDecision?: (decision: AuthorizationDecision) => void;
  /** Milliseconds on a monotonic clock (tests); default performance.now. */
  now?: () => number;
}

/** `error`: no intention was evaluated (unreadable certificate, foreign trust domain); the connection is refused. */
import type { AuthorizationDecision } from '../domain/intentions.js';

export type { AuthorizationDecision } from '../domain/intentions.js';

export interface AuthorizerStats {
  allowed: number;
  denied: number;
  /** Connections whose requests an L7 policy decides (HTTP listeners). */
  l7: number;
  /** Requests decided here for L7 policies the configuration does not render. */
  requestsAllowed: number;
  requestsDenied: number;
  /** Denied because the certificate or the message could not be read. */
  invalid: number;
  trackedConnections: number;
}

export interface AuthorizerUpdate {
  intentions?: IntentionSet;
  trustDomain?: string;
  /** Our own certificate's URI SAN: the `By` of X-Forwarded-Client-Cert. */
  localSpiffeUri?: string;
}

function selfSigned(der: Buffer): boolean {
  const cert = new X509Certificate(der);
  return cert.subject === cert.issuer && cert.verify(cert.publicKey);
}

/** A connection that was allowed and is denied now: its source as `show sess` prints it (`ip:port`). */
export interface RevokedConnection {
  source: string;
  identity: SourceIdentity;
}

interface Tracked {
  identity: SourceIdentity;
}

/** A message flag written as `int(1)`: it reaches us as an int64 (HAProxy encodes every integer sample so). */
function isSet(flag: TypedData | undefined): boolean {
  return (flag?.type === 'int64' || flag?.type === 'int32') && Number(flag.value) === 1;
}

function int(scope: 'sess' | 'txn', name: string, value: number): SpoeAction {
  return { type: 'set-var', scope, name, value: { type: 'int32', value } };
}

function str(scope: 'sess', name: string, value: string): SpoeAction {
  return { type: 'set-var', scope, name, value: { type: 'string', value } };
}

/** `ip:port` as HAProxy's `show sess` prints a source (inet_ntop form for IPv6). */
export function formatSource(address: TypedData | undefined, port: TypedData | undefined): string | undefined {
  let ip: string | undefined;
  if (address?.type === 'ipv4' && address.value.length === 4) ip = `${address.value[0]}.${address.value[1]}.${address.value[2]}.${address.value[3]}`;
  else if (address?.type === 'ipv6' && address.value.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(address.value.readUInt16BE(i).toString(16));
    ip = new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
  }
  const p = portOf(port);
  if (ip === undefined || p === undefined) return undefined;
  return `${ip}:${p}`;
}

/** A source port (an int64 from HAProxy, an int32 from tests), undefined unless 0..65535. */
function portOf(port: TypedData | undefined): number | undefined {
  let p: number | undefined;
  if (port?.type === 'int32' || port?.type === 'uint32') p = port.value;
  else if (port?.type === 'int64' || port?.type === 'uint64') p = Number(port.value);
  return p !== undefined && Number.isInteger(p) && p >= 0 && p <= 65_535 ? p : undefined;
}

const PORTS = 65_536;

/**
 * The key a source is tracked under: an IPv4 source as one number (address × 65536 + port: no
 * string built per connection), any other as its `show sess` form. PURE.
 */
export function sourceKey(address: TypedData | undefined, port: TypedData | undefined): number | string | undefined {
  const p = portOf(port);
  if (address?.type === 'ipv4' && address.value.length === 4 && p !== undefined) return address.value.readUInt32BE(0) * PORTS + p;
  return formatSource(address, port);
}

/** A tracked source's `show sess` form (`ip:port`). PURE. */
export function sourceOfKey(key: number | string): string {
  if (typeof key === 'string') return key;
  const ip = Math.floor(key / PORTS);
  return `${Math.floor(ip / 16_777_216)}.${Math.floor(ip / 65_536) % 256}.${Math.floor(ip / 256) % 256}.${ip % 256}:${key % PORTS}`;
}

function identityKey(identity: SourceIdentity): string {
  return JSON.stringify([identity.peer ?? '', identity.partition, identity.namespace, identity.service]);
}

export class Authorizer {
  readonly #decisions = new IntentionDecisions();
  readonly #log: Logger;
  readonly #maxTracked: number;
  readonly #maxCertificates: number;
  #trustDomain: string | undefined;
  #localSpiffeUri = '';
  /** DER and chain (latin1) → the XFCC element of the connection. */
  readonly #xfcc = new Map<string, string>();
  /** Source (sourceKey) → identity of allowed connections. */
  readonly #tracked = new Map<number | string, Tracked>();
  /** DER (latin1) → parsed SPIFFE ID. */
  readonly #certificates = new Map<string, ServiceSpiffeId>();
  /** The certificate read last and its SPIFFE ID (one of #certificates). */
  #lastCertificate: { der: Buffer; id: ServiceSpiffeId } | undefined;
  readonly #stats = { allowed: 0, denied: 0, l7: 0, requestsAllowed: 0, requestsDenied: 0, invalid: 0 };
  /** The L7 policies of the current intentions, by id. */
  #policies = new Map<string, L7Policy>();
  /** L7 policies the intentions dropped, by id, with when they stop deciding (RETIRED_POLICY_MS). */
  readonly #retired = new Map<string, { policy: L7Policy; until: number }>();
  readonly #now: () => number;
  readonly #onDecision: ((decision: AuthorizationDecision) => void) | undefined;

  constructor(options: AuthorizerOptions = {}) {
    this.#log = options.logger ?? silentLogger();
    this.#onDecision = options.onDecision;
    this.#maxTracked = options.maxTrackedConnections ?? DEFAULT_MAX_TRACKED_CONNECTIONS;
    this.#maxCertificates = options.maxCachedCertificates ?? DEFAULT_MAX_CACHED_CERTIFICATES;
    this.#now = options.now ?? (() => performance.now());
  }

  get stats(): AuthorizerStats {
    return { ...this.#stats, trackedConnections: this.#tracked.size };
  }

  /**
   * Installs new intentions and/or a new trust domain. Returns the remembered connections that
   * were allowed and would be denied now (they are forgotten here; the caller closes them).
   */
  update(update: AuthorizerUpdate): RevokedConnection[] {
    let changed = false;
    if (update.localSpiffeUri !== undefined && update.localSpiffeUri !== this.#localSpiffeUri) {
      this.#localSpiffeUri = update.localSpiffeUri;
      this.#xfcc.clear();
    }
    if (update.trustDomain !== undefined && update.trustDomain.toLowerCase() !== this.#trustDomain) {
      this.#trustDomain = update.trustDomain.toLowerCase();
      // Identities are only valid in the trust domain they were read for.
      this.#certificates.clear();
      this.#lastCertificate = undefined;
      changed = true;
    }
    if (update.intentions !== undefined && this.#decisions.update(update.intentions)) {
      changed = true;
      const before = this.#policies;
      this.#policies = policiesOf(update.intentions);
      this.#retire(before, this.#policies);
    }
    if (!changed) return [];
    const revoked: RevokedConnection[] = [];
    for (const [key, tracked] of this.#tracked) {
      if (this.#decisions.decide(tracked.identity).allowed) continue;
      // Deleting the entry being visited is safe in a Map's iteration.
      this.#tracked.delete(key);
      revoked.push({ source: sourceOfKey(key), identity: tracked.identity });
    }
    return revoked;
  }

  /**
   * Keeps the policies of `before` that `after` lacks for RETIRED_POLICY_MS, and forgets those past
   * it (here: an expired policy no longer decides, and its memory goes at the next change).
   */
  #retire(before: ReadonlyMap<string, L7Policy>, after: ReadonlyMap<string, L7Policy>): void {
    const now = this.#now();
    for (const [id, entry] of this.#retired) if (entry.until <= now || after.has(id)) this.#retired.delete(id);
    for (const [id, policy] of before) if (!after.has(id)) this.#retired.set(id, { policy, until: now + RETIRED_POLICY_MS });
  }

  /** The policy `id` of the current intentions, or one they dropped less than RETIRED_POLICY_MS ago. */
  #policyOf(id: string): L7Policy | undefined {
    const current = this.#policies.get(id);
    if (current !== undefined || this.#retired.size === 0) return current;
    const retired = this.#retired.get(id);
    return retired !== undefined && retired.until > this.#now() ? retired.policy : undefined;
  }

  /** The L7 policies of the current intentions (for the configuration and tests). */
  get policies(): ReadonlyMap<string, L7Policy> {
    return this.#policies;
  }

  /** The SPOE handler (synchronous: the agent ACKs in NOTIFY order). */
  readonly handle = (messages: readonly SpoeMessage[]): SpoeAction[] => {
    const permissions = messages.find((m) => m.name === SPOE_PERMISSIONS_MESSAGE);
    if (permissions !== undefined) return this.#decideRequest(permissions);
    const message = messages.find((m) => m.name === SPOE_MESSAGE || m.name === SPOE_REAUTHORIZE_MESSAGE);
    if (message === undefined) return [];
    const startedAt = performance.now();
    const arg = (name: string): TypedData | undefined => message.args.find((a) => a.name === name)?.value;
    const epoch = arg(SPOE_ARG.epoch);
    const src = arg(SPOE_ARG.src);
    const srcPort = arg(SPOE_ARG.srcPort);
    const actions: SpoeAction[] = [];
    // Echo the epoch HAProxy asked under: the verdict stays valid until HAProxy's epoch moves on.
    if (epoch?.type === 'string') actions.push(str('sess', SPOE_VAR.epoch, epoch.value));

    let id: ServiceSpiffeId;
    try {
      id = this.#identityOf(arg(SPOE_ARG.cert));
    } catch (err) {
      this.#stats.invalid += 1;
      this.#stats.denied += 1;
      this.#log.debug({ source: formatSource(src, srcPort), err: errorMessage(err) }, 'connection denied: unreadable client identity');
      actions.push(int('sess', SPOE_VAR.auth, SPOE_AUTH.deny));
      this.#onDecision?.({ result: 'error', durationMs: performance.now() - startedAt });
      return actions;
    }
    const identity: SourceIdentity = { service: id.service, namespace: id.namespace, partition: id.partition };
    const decision = this.#decisions.decide(identity);
    // On an HTTP listener, each request is decided again (an intention change reaches the next
    // request of a kept-alive connection): such connections are never closed on a change.
    const http = isSet(arg(SPOE_ARG.http));
    const l7 = http && !decision.allowed ? decision.l7 : undefined;
    let result: 'allow' | 'deny' | 'l7';
    if (decision.allowed) {
      result = 'allow';
      this.#stats.allowed += 1;
      const key = http ? undefined : sourceKey(src, srcPort);
      if (key !== undefined) touchLru(this.#tracked, key, { identity }, this.#maxTracked);
    } else if (l7 !== undefined) {
      result = 'l7';
      this.#stats.l7 += 1;
      actions.push(str('sess', SPOE_VAR.policy, l7.id));
    } else {
      result = 'deny';
      this.#stats.denied += 1;
    }
    if (this.#log.isLevelEnabled('debug')) {
      this.#log.debug({ source: formatSource(src, srcPort), service: id.service, namespace: id.namespace, datacenter: id.datacenter, result, reason: decision.reason }, 'connection authorized');
    }
    if (result !== 'deny' && isSet(arg(SPOE_ARG.xfcc))) {
      const element = this.#xfccOf(arg(SPOE_ARG.cert), arg(SPOE_ARG.chain));
      if (element !== undefined) actions.push(str('sess', SPOE_VAR.xfcc, element));
    }
    actions.push(
      int('sess', SPOE_VAR.auth, SPOE_AUTH[result]),
      str('sess', SPOE_VAR.sourceService, id.service),
      str('sess', SPOE_VAR.sourceNamespace, id.namespace),
      str('sess', SPOE_VAR.sourcePartition, id.partition),
      str('sess', SPOE_VAR.sourceDatacenter, id.datacenter),
    );
    this.#onDecision?.({ result, durationMs: performance.now() - startedAt });
    return actions;
  };

  /** One request of an L7-governed connection whose policy the configuration leaves to us. Anything unreadable denies. */
  #decideRequest(message: SpoeMessage): SpoeAction[] {
    const startedAt = performance.now();
    const arg = (name: string): TypedData | undefined => message.args.find((a) => a.name === name)?.value;
    const policyArg = arg(SPOE_PERMISSIONS_ARG.policy);
    const method = arg(SPOE_PERMISSIONS_ARG.method);
    const path = arg(SPOE_PERMISSIONS_ARG.path);
    const headers = arg(SPOE_PERMISSIONS_ARG.headers);
    let allowed = false;
    let reason: string;
    const policy = policyArg?.type === 'string' ? this.#policyOf(policyArg.value) : undefined;
    if (policy === undefined) reason = `unknown L7 policy ${policyArg?.type === 'string' ? policyArg.value : `(${policyArg?.type ?? 'missing'})`}`;
    else if (method?.type !== 'string' || headers?.type !== 'binary') reason = `the request's method or headers are missing (${method?.type ?? 'no method'}, ${headers?.type ?? 'no headers'})`;
    else {
      try {
        // `path` is absent for a request without one (asterisk form): no path matcher matches it.
        const request = { method: method.value, path: path?.type === 'string' ? path.value : '', headers: decodeHdrsBin(headers.value) };
        allowed = decideL7(policy, request);
        reason = `policy ${policy.id}`;
      } catch (err) {
        reason = `unreadable request: ${errorMessage(err)}`;
      }
    }
    if (allowed) this.#stats.requestsAllowed += 1;
    else this.#stats.requestsDenied += 1;
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ allowed, reason }, 'request authorized');
    this.#onDecision?.({ result: allowed ? 'request_allow' : 'request_deny', durationMs: performance.now() - startedAt });
    return [int('txn', SPOE_VAR.authz, allowed ? 1 : 0)];
  }

  /** The connection's X-Forwarded-Client-Cert element (undefined, logged, if it cannot be written: the header is then left out). */
  #xfccOf(cert: TypedData | undefined, chain: TypedData | undefined): string | undefined {
    if (cert?.type !== 'binary') return undefined;
    const chainDer = chain?.type === 'binary' ? chain.value : Buffer.alloc(0);
    const key = `${cert.value.toString('latin1')}\0${chainDer.toString('latin1')}`;
    const cached = this.#xfcc.get(key);
    if (cached !== undefined) return cached;
    try {
      // HAProxy 2.6's ssl_c_chain_der is the verified chain, trust anchor included (measured);
      // Envoy's Chain holds what the client sent: the self-signed root is left out.
      const sent = splitDerCertificates(chainDer).filter((der) => !selfSigned(der));
      const element = xfccElement(cert.value, this.#localSpiffeUri, sent);
      touchLru(this.#xfcc, key, element, this.#maxCertificates);
      return element;
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot write X-Forwarded-Client-Cert for a connection');
      return undefined;
    }
  }

  /** Throws (→ deny) unless the argument is a certificate with one service SPIFFE ID in our trust domain. */
  #identityOf(cert: TypedData | undefined): ServiceSpiffeId {
    if (cert?.type !== 'binary' || cert.value.length === 0) throw new HaproxyConnectError('CERTIFICATE_INVALID', `no client certificate (got ${cert?.type ?? 'nothing'})`);
    // Most connections come from the source seen last: a byte compare, without the cache's 1 KB key.
    const last = this.#lastCertificate;
    if (last?.der.equals(cert.value)) return last.id;
    const key = cert.value.toString('latin1');
    const cached = this.#certificates.get(key);
    if (cached !== undefined) {
      this.#lastCertificate = { der: cert.value, id: cached };
      return cached;
    }
    const id = spiffeIdOfCertificate(new X509Certificate(cert.value));
    if (id.kind !== 'service') throw new HaproxyConnectError('CERTIFICATE_INVALID', `certificate names a ${id.kind}, not a service`);
    if (this.#trustDomain === undefined) throw new HaproxyConnectError('CERTIFICATE_INVALID', 'the trust domain is not known yet');
    if (id.trustDomain.toLowerCase() !== this.#trustDomain) throw new HaproxyConnectError('CERTIFICATE_INVALID', `trust domain ${id.trustDomain} is not ours (${this.#trustDomain})`);
    touchLru(this.#certificates, key, id, this.#maxCertificates);
    this.#lastCertificate = { der: cert.value, id };
    return id;
  }

  /** For logs and tests: the decision cache's counters. */
  get decisionCache(): { size: number; hits: number; misses: number } {
    return this.#decisions.stats;
  }

  /** Identity keys of the remembered connections (tests). */
  trackedIdentities(): string[] {
    return [...new Set([...this.#tracked.values()].map((t) => identityKey(t.identity)))];
  }
}
