/**
 * The narrow interface haproxy-connect needs from the local Consul agent, one method per data
 * source. `client.ts` implements it over HTTP; tests use an in-process fake.
 * Every method validates the response at the boundary and returns domain types.
 */
import type { IntentionSet } from '../domain/intentions.js';
import type { Chain, Endpoint, Leaf, MeshConfig, ProxyRegistration, Roots } from '../domain/snapshot.js';
import type { ExposedCheck } from '../domain/expose.js';

/** Blocking-query position: index-based endpoints use `index`, hash-based ones `hash`. */
export interface Cursor {
  index?: number | undefined;
  hash?: string | undefined;
}

/** A value and the cursor to pass to the next blocking call. */
export interface Versioned<T> {
  value: T;
  cursor: Cursor;
}

export interface AgentInfo {
  datacenter: string;
  nodeName: string;
}

/** A connect-proxy service registered on the local agent (from /v1/agent/services). */
export interface ProxyServiceSummary {
  id: string;
  name: string;
  tags: string[];
  destinationServiceId: string;
  destinationServiceName: string;
}

export interface UpstreamQuery {
  destinationName: string;
  destinationNamespace: string;
  /** Empty = local datacenter. */
  datacenter: string;
  /** A subset's filter (Consul's bexpr), evaluated by Consul on the answer; empty for none. */
  filter?: string;
}

/** What a sidecar asks for one upstream's discovery chain (as Consul's own proxies ask it). */
export interface ChainQuery {
  /** The upstream's key: errors name it. */
  upstream: string;
  name: string;
  /** The datacenter to compile the chain for; empty = the agent's. */
  datacenter: string;
  /** The agent's datacenter: targets elsewhere are remote. */
  localDatacenter: string;
  /** The upstream's protocol (OverrideProtocol). */
  overrideProtocol: string;
  /** The upstream's connect_timeout_ms (OverrideConnectTimeout); undefined leaves the resolvers' own. */
  overrideConnectTimeoutMs: number | undefined;
}

/** The destination whose intentions we enforce (our own service). */
export interface IntentionTarget {
  name: string;
  /** '' or 'default' for the default namespace. */
  namespace: string;
}

import type { ServiceDefinition } from '../domain/consul.js';

export type { ServiceDefinition } from '../domain/consul.js';

export interface ConsulAgentApi {
  /** A readable description of where the agent is, for error messages (e.g. `http://127.0.0.1:8500`). */
  readonly address: string;
  agentSelf(signal: AbortSignal): Promise<AgentInfo>;
  listProxyServices(signal: AbortSignal): Promise<ProxyServiceSummary[]>;
  /** GET /v1/agent/service/<id>, hash-based blocking; the registration parsed and validated. */
  proxyRegistration(proxyId: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<ProxyRegistration>>;
  /** GET /v1/agent/connect/ca/leaf/<service>, index-based blocking. */
  leaf(serviceName: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Leaf>>;
  /** GET /v1/agent/connect/ca/roots, index-based blocking. */
  roots(cursor: Cursor, signal: AbortSignal): Promise<Versioned<Roots>>;
  /** GET /v1/health/connect/<name>?cached[&filter=...], index-based blocking: the target's sidecars, every health status (health is decided locally). */
  upstreamEndpoints(query: UpstreamQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Endpoint[]>>;
  /**
   * POST /v1/discovery-chain/<name>?compile-dc=<dc>&cached, index-based blocking: the upstream's
   * compiled chain (targets in failover order, load balancer), see discovery-chain.ts.
   */
  discoveryChain(query: ChainQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Chain>>;
  /** GET /v1/query/<name>/execute?connect=true (not blocking: the caller polls). */
  preparedQueryEndpoints(query: UpstreamQuery, signal: AbortSignal): Promise<Endpoint[]>;
  /**
   * GET /v1/connect/intentions/match?by=destination&name=<svc>, index-based blocking: the
   * intentions for our destination in precedence order, and the default decision from the
   * `X-Consul-Default-ACL-Policy` header (sent by every Consul >= 1.9, ACLs on or off).
   */
  intentionsMatch(destination: IntentionTarget, cursor: Cursor, signal: AbortSignal): Promise<Versioned<IntentionSet>>;
  /**
   * GET /v1/config/mesh/mesh, index-based blocking: the mesh config entry; no entry (404, which
   * blocks and carries X-Consul-Index like an answer) is Consul's defaults. Any token can read it
   * (MeshConfigEntry.CanRead allows all), so a 403 means the token itself was refused.
   */
  meshConfig(cursor: Cursor, signal: AbortSignal): Promise<Versioned<MeshConfig>>;
  /**
   * GET /v1/agent/checks (not blocking: the caller polls): the HTTP and gRPC checks of the service
   * `serviceId` that the agent sends through the sidecar (Proxy.Expose.Checks), see expose.ts.
   */
  exposedChecks(serviceId: string, signal: AbortSignal): Promise<ExposedCheck[]>;
  /** PUT /v1/agent/service/register: registers (or replaces) a service and its check on the local agent. */
  registerService(service: ServiceDefinition, signal: AbortSignal): Promise<void>;
  /** PUT /v1/agent/service/deregister/<id>: removes it (and its check); an unknown ID is not an error. */
  deregisterService(serviceId: string, signal: AbortSignal): Promise<void>;
}
