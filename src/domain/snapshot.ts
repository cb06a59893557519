/**
 * The snapshot: everything haproxy-connect knows about its sidecar, folded from the Consul watches
 * by one owner (see fold.ts). Plain immutable data; translate reads nothing else.
 */
import type { LoadBalancer, Route } from './routes.js';

export type { HashPolicy, LoadBalancer } from './routes.js';
import type { IntentionSet } from './intentions.js';
import type { AccessLogFormat } from './access-log-template.js';
import type { PassiveHealthCheck, UpstreamLimits } from './upstream-limits.js';
import type { ExposeConfig, ExposedCheck } from './expose.js';

/** Consul proxy protocols. Consul's default is tcp. */
export type Protocol = 'tcp' | 'http' | 'http2' | 'grpc';

export interface PublicListener {
  /** Address the public mTLS listener binds to (Config.bind_address, else the service Address, else 0.0.0.0). */
  bindAddress: string;
  /** Port of the public listener (Config.bind_port, else the proxy's Port). */
  bindPort: number;
  protocol: Protocol;
  /** Where the local application listens (LocalServiceAddress default 127.0.0.1, LocalServicePort). */
  localServiceAddress: string;
  localServicePort: number;
  /** Config.local_connect_timeout_ms (Consul default 5000). */
  localConnectTimeoutMs: number;
  /** Config.local_request_timeout_ms (HTTP only; 0 = no timeout). Consul default 15000 for HTTP. */
  localRequestTimeoutMs: number | undefined;
}

export interface Upstream {
  /** Stable key of this upstream: `${destinationType}:${namespace}/${destinationName}@${datacenter}`. */
  key: string;
  destinationType: 'service' | 'prepared_query';
  destinationName: string;
  destinationNamespace: string;
  /** The datacenter to query; empty means the local datacenter. */
  datacenter: string;
  /** Local listener: either address+port or a unix socket path. */
  localBindAddress: string;
  localBindPort: number;
  localBindSocketPath: string | undefined;
  localBindSocketMode: number | undefined;
  protocol: Protocol;
  /** Config.connect_timeout_ms, Consul default 5000. */
  connectTimeoutMs: number;
  /**
   * Config.connect_timeout_ms when the registration sets it: it then replaces every resolver's
   * ConnectTimeout in the discovery chain (Consul's OverrideConnectTimeout), as for Envoy.
   */
  configuredConnectTimeoutMs?: number;
  /** Config.limits; absent: Envoy's circuit-breaker defaults (1024 each) apply. */
  limits?: UpstreamLimits;
  /** Config.passive_health_check; absent: no ejection (README "Upstream limits and passive health"). */
  passiveHealthCheck?: PassiveHealthCheck;
}

/** Where access log lines go (Consul's `AccessLogs.Type` and `Path`). */
export type AccessLogSink = { type: 'stdout' } | { type: 'stderr' } | { type: 'file'; path: string };

/** `Proxy.AccessLogs`, merged by the agent from the `proxy-defaults` config entry. */
export interface AccessLogs {
  enabled: boolean;
  /** Drop listener-level lines (connections that fail before they are proxied, e.g. TLS handshakes). */
  disableListenerLogs: boolean;
  sink: AccessLogSink;
  /** JSONFormat, TextFormat, or Consul's default JSON format when neither is set. */
  format: AccessLogFormat;
}

/**
 * An item left out because its data from Consul cannot be used (an instance with the address
 * "bad host#1", an upstream whose Config.protocol is unknown, a root that does not parse). The rest
 * of the configuration keeps flowing; the reconciler logs each one and counts it.
 */
export interface DroppedItem {
  kind: 'upstream' | 'endpoint' | 'target' | 'root' | 'expose' | 'setting';
  /**
   * Names the item: the upstream key (or `Upstreams[i]`), `<upstream key> <instance id>`, the root
   * ID, or `Upstreams[i] <field>` for an upstream setting that fell back to its default.
   */
  item: string;
  /** What is wrong with it, naming the value. */
  reason: string;
}

export interface ProxyRegistration {
  /** The sidecar proxy's service ID and name. */
  proxyId: string;
  proxyName: string;
  /** The service this proxy fronts. */
  serviceName: string;
  serviceId: string;
  namespace: string;
  partition: string;
  publicListener: PublicListener;
  upstreams: Upstream[];
  /** Proxy.AccessLogs; absent when the agent sends none. */
  accessLogs?: AccessLogs;
  /** Upstreams of the registration that could not be used (bad values, a duplicate key or bind), and upstream settings at their defaults because their values were bad. */
  droppedUpstreams?: readonly DroppedItem[];
  /** Proxy.Expose (see expose.ts); absent when the registration exposes nothing. */
  expose?: ExposeConfig;
}

export interface Leaf {
  certPem: string;
  privateKeyPem: string;
  serialNumber: string;
  /** ISO-8601 expiry, as Consul gives it. */
  validBefore: string;
  /** Consul's index for this leaf: it changes whenever the agent issues a new one. */
  modifyIndex: number;
}

export interface CaRoot {
  id: string;
  rootCertPem: string;
  intermediateCertsPem: string[];
  active: boolean;
}

export interface Roots {
  trustDomain: string;
  activeRootId: string;
  roots: CaRoot[];
}

/** One healthy, connect-capable instance of an upstream: the address of its sidecar's public listener. */
export interface Endpoint {
  /** Stable identity of the instance: `${node}/${proxyServiceId}`. */
  id: string;
  node: string;
  address: string;
  port: number;
  /** Consul's `Weights.Passing` (default 1). */
  weight: number;
  /**
   * The worst status of the instance's checks. Absent means passing (prepared queries answer only
   * healthy instances). Translate decides health as Envoy does: critical is unhealthy, warning is
   * healthy unless the target's subset is OnlyPassing.
   */
  status?: 'passing' | 'warning' | 'critical';
  /** Consul's `Weights.Warning` (default 1): the weight while a check warns. */
  warningWeight?: number;
  /** Set when Consul's entry for this instance could not be read: translate leaves it out and says why. */
  invalid?: string;
}

/**
 * One set of instances an upstream resolves to: one service (or prepared query) in one
 * datacenter, watched on its own (see chain.ts).
 */
export interface Target {
  /**
   * Stable identity, Consul's form for discovery-chain targets: `<service>.<namespace>.<partition>.<datacenter>`;
   * `query:<name>.<datacenter>` for a prepared query. The datacenter is always named (never '').
   */
  id: string;
  kind: 'service' | 'prepared_query';
  service: string;
  namespace: string;
  partition: string;
  datacenter: string;
  /** The subset's filter (Consul's bexpr on the health query); '' for none. */
  filter?: string;
  /** The subset's OnlyPassing: an instance with a warning check is unhealthy. */
  onlyPassing?: boolean;
  /** The target's connect timeout (its resolver's ConnectTimeout, or the upstream's connect_timeout_ms). */
  connectTimeoutMs?: number;
  /** The target's mesh gateway mode ('' when none is set). */
  meshGatewayMode?: string;
}

/** An upstream's discovery chain: the targets it uses, in order. */
export interface Chain {
  /**
   * The primary target first, then the failover targets in order. A trivial chain (no
   * discovery-chain config entries, or a prepared query) has one: the upstream's destination.
   */
  targets: readonly Target[];
  /** The resolver's LoadBalancer; absent: round robin. */
  loadBalancer?: LoadBalancer;
  /** Parts of the chain that cannot be honoured (logged once per upstream, the rest applies). */
  refused?: readonly string[];
  /**
   * HTTP chains: the routes, in order (first match wins, the catch-all last). A chain without
   * router or splitter has one catch-all route to its resolver. Absent for TCP chains.
   */
  routes?: readonly Route[];
  /** Set when Consul's chain cannot be used (why): the consumer refuses it and keeps the last good chain. */
  invalid?: string;
}

/**
 * What the sidecar uses of the `mesh` config entry (GET /v1/config/mesh/mesh). No entry (404) and
 * no answer yet both mean Consul's defaults (DEFAULT_MESH_CONFIG).
 */
export interface MeshConfig {
  /**
   * HTTP.SanitizeXForwardedClientCert: when false (the default), an HTTP (not gRPC) public listener
   * appends the client's `x-forwarded-client-cert` element towards the local app, as Envoy's
   * APPEND_FORWARD does for Consul 1.16.2; when true the header is removed (SANITIZE).
   */
  sanitizeXForwardedClientCert: boolean;
}

export const DEFAULT_MESH_CONFIG: Readonly<MeshConfig> = Object.freeze({ sanitizeXForwardedClientCert: false });

export interface Snapshot {
  /** The local agent's datacenter. */
  datacenter: string;
  registration: ProxyRegistration;
  leaf: Leaf;
  roots: Roots;
  /** The chain of every registered upstream, by upstream key. */
  chains: ReadonlyMap<string, Chain>;
  /** Healthy endpoints per target id. A target with no entry has not been answered yet. */
  targets: ReadonlyMap<string, readonly Endpoint[]>;
  /** The intentions of our service, or undefined when intentions are not enforced (-enable-intentions=false). */
  intentions: IntentionSet | undefined;
  /** The mesh config entry: Consul's defaults until (and unless) the entry is read; never waited for. */
  mesh: MeshConfig;
  /** With Proxy.Expose.Checks: the service's checks the agent sends through the sidecar; absent or [] otherwise. */
  exposedChecks?: readonly ExposedCheck[];
}

/** One change from a Consul watch, as the snapshot's owner folds it in. */
export type SnapshotEvent =
  | { kind: 'registration'; value: ProxyRegistration }
  | { kind: 'leaf'; value: Leaf }
  | { kind: 'roots'; value: Roots }
  | { kind: 'chain'; upstreamKey: string; value: Chain }
  | { kind: 'target-endpoints'; targetId: string; value: readonly Endpoint[] }
  | { kind: 'target-removed'; targetId: string }
  | { kind: 'intentions'; value: IntentionSet }
  | { kind: 'mesh'; value: MeshConfig }
  | { kind: 'exposed-checks'; value: readonly ExposedCheck[] };

export type MissingPart = 'registration' | 'leaf' | 'roots' | 'intentions';
