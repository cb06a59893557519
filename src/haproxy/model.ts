/**
 * The desired HAProxy configuration as plain data. Produced by translate (pure), rendered to
 * haproxy.cfg text by render.ts (pure), compared by the planner. No I/O here.
 *
 * File names in the model are relative to the run directory; the rendered config sets
 * `crt-base`/`ca-base` to the run directory so certificates resolve there.
 */
import type { L7Policy } from '../domain/intentions.js';
import type { HeaderOps, RouteMatch } from '../domain/routes.js';

export type Mode = 'tcp' | 'http';

export type Bind = { kind: 'inet'; address: string; port: number } | { kind: 'unix'; path: string; mode: number | undefined };

/** A file HAProxy reads, written by the applier into the run directory. */
export interface ModelFile {
  /** Name relative to the run directory, e.g. `leaf.pem`. No slashes. */
  name: string;
  content: string;
  /** File mode; private keys are 0o600. */
  mode: number;
}

/**
 * HAProxy's own metrics: a `mode http` frontend on a unix socket in the run directory (mode 600)
 * that serves the built-in Prometheus exporter and a liveness answer (names.ts STATS_*_PATH).
 */
export interface StatsEndpoint {
  /** Frontend name; it appears in HAProxy's own metrics like every other proxy. */
  frontend: string;
  /** Socket name in the run directory. */
  socket: string;
}

/**
 * HAProxy's logs go to a ring whose server is the daemon's receiver on a unix stream socket in
 * the run directory (octet-counted syslog). A full ring drops lines: HAProxy never waits for us.
 */
export interface LogReceiver {
  ring: string;
  /** Socket name in the run directory (the daemon listens there, mode 600). */
  socket: string;
}

export interface Global {
  /** Absolute run directory: holds haproxy.cfg, certificates and sockets. */
  runDir: string;
  /** Runtime API socket name in the run directory (admin level, mode 600). */
  adminSocket: string;
  /** The metrics frontend; undefined renders none. */
  stats: StatsEndpoint | undefined;
  /** Where HAProxy's messages and access logs go; undefined: notices and worse to stderr. */
  logs: LogReceiver | undefined;
  /** Threads per worker; undefined lets HAProxy choose. */
  nbthread: number | undefined;
  maxconn: number;
  /** `hard-stop-after`: how long an old (reloaded) or soft-stopped worker may finish its connections. */
  hardStopAfterMs: number;
}

export interface FrontendTls {
  /** crt-list file name: `leaf.pem [ca-file roots.pem verify required ...] <sni filter>`. */
  crtList: string;
  alpn: string[] | undefined;
}

/**
 * Intentions enforcement on a frontend: an SPOE filter asks our agent about each new connection
 * (and again when the intentions epoch changed), and the connection is rejected unless the agent
 * allowed it. render.ts writes the filter, the rules and the agent's backend from this.
 */
export interface FrontendSpoe {
  /** SPOE engine id: the `[section]` of the SPOE config file. */
  engine: string;
  /** SPOE config file (a model file). */
  configFile: string;
  /** Map file with the current intentions epoch (a model file, updated at runtime). */
  epochMapFile: string;
  /** `tcp-request inspect-delay`: the bound on waiting for the verdict (fail closed after it). */
  inspectDelayMs: number;
  /** The `mode tcp` backend that connects to the agent socket. */
  agentBackend: string;
  /** The agent's unix socket, a name in the run directory. */
  agentSocket: string;
  agentConnectTimeoutMs: number;
  agentServerTimeoutMs: number;
  /**
   * An HTTP listener: every request is decided (Envoy's 403 on a denial, L7 permissions apply) and
   * these L7 policies are rendered as ACL chains; any other is decided by the agent per request.
   */
  http?: { policies: readonly L7Policy[] };
}

/**
 * Consul's AccessLogs on a frontend: one line per connection (tcp) or request (http), in the
 * layout of access-log-wire.ts; the daemon applies the user's format.
 */
export interface FrontendAccessLog {
  /** Logged as `upstream_cluster`: Consul's name for the cluster this frontend forwards to. */
  cluster: string;
  /** HTTP only: request headers to capture (lowercase; `:method`, `:path`, `:authority` too). */
  requestHeaders: string[];
  /** HTTP only: response headers to capture (lowercase). */
  responseHeaders: string[];
}

/** One input of the consistent-hash key of an HTTP frontend (`txn.lbkey`), in order. */
export interface HashKeyPart {
  sample: { kind: 'header' | 'cookie' | 'query_parameter'; name: string } | { kind: 'source_ip' };
  /** Stop after this part when it produced a value. */
  terminal: boolean;
}

/** One leg of an HTTP route: the backends of its resolver's targets, in failover order. */
export interface FrontendRouteLeg {
  backends: readonly string[];
  requestHeaders: HeaderOps;
  responseHeaders: HeaderOps;
}

/**
 * One HTTP route of a frontend. The first route whose match takes a request wins (the last one
 * is a catch-all); a route of several legs picks one by the cut points in the splits map (model
 * file `splitsMapFile`, keys `<frontend>/<route>/<leg>`), which change at runtime.
 */
export interface FrontendRoute {
  match: RouteMatch;
  /** Replaces `prefix` at the start of the path (query kept) and sets x-envoy-original-path. */
  prefixRewrite?: { prefix: string; replacement: string };
  /** `set-timeout server` for this route's requests (its backends read it from `txn.rto`). */
  timeoutServerMs: number;
  requestHeaders: HeaderOps;
  responseHeaders: HeaderOps;
  /** The route's consistent-hash key (`txn.lbkey`); empty: none. */
  hashKey: readonly HashKeyPart[];
  legs: readonly FrontendRouteLeg[];
}

export interface Frontend {
  name: string;
  mode: Mode;
  bind: Bind;
  tls: FrontendTls | undefined;
  defaultBackend: string;
  /**
   * Failover: the backends tried in order when every backend before them (default_backend first)
   * has no usable server. All or nothing per tier, decided per connection or request.
   */
  failoverBackends?: readonly string[];
  /** HTTP only: the consistent-hash key (`txn.lbkey`) its backends with `balance: 'hash'` use. */
  hashKey?: readonly HashKeyPart[];
  /**
   * HTTP only: routes (service-router, service-splitter). When set they choose the backend;
   * `defaultBackend` and `failoverBackends` serve only a request no route takes (none, as the
   * last route is a catch-all).
   */
  routes?: readonly FrontendRoute[];
  /** The splits map file (a model file) when a route has several legs. */
  splitsMapFile?: string;
  timeoutClientMs: number;
  /** HTTP only: `timeout http-request`. */
  timeoutHttpRequestMs: number | undefined;
  maxconn: number | undefined;
  /** Intentions enforcement; undefined when the frontend does not enforce intentions. */
  spoe: FrontendSpoe | undefined;
  /**
   * HTTP only, X-Forwarded-Client-Cert towards the backend: `append` the element the SPOE agent
   * wrote for the connection (`sess.connect.xfcc`) to what came in, as Envoy's APPEND_FORWARD;
   * `sanitize` removes it (Envoy's SANITIZE); undefined leaves the header alone.
   */
  xfcc?: 'append' | 'sanitize';
  /** Access log; undefined when Consul's AccessLogs are off. */
  accessLog: FrontendAccessLog | undefined;
  /**
   * HTTP only, an exposed-path listener (Proxy.Expose): a request whose path (without the query)
   * is none of these, exactly, is answered 404 with no body, as Envoy's route table of exact paths.
   */
  exposedPaths?: readonly string[];
  /**
   * HTTP only: a reload leaves this frontend's idle keep-alive connections open on the old worker
   * until their next request, whose response closes them (`option idle-close-on-response`).
   */
  keepIdleThroughReload?: boolean;
}

export interface ServerTls {
  /** Client certificate (with key) presented to the peer sidecar. */
  crt: string;
  /** CA bundle the peer's certificate must chain to. */
  caFile: string;
  alpn: string[] | undefined;
}

export interface Server {
  /** Stable name derived from the endpoint identity (runtime operations address servers by name). */
  name: string;
  address: string;
  port: number;
  weight: number;
  /**
   * Starts in maintenance (`disabled` in haproxy.cfg): a spare server slot that the Data Plane API
   * driver fills at runtime. Never set by translate; never on the runtime `add server` path.
   */
  maintenance?: true;
}

/**
 * `check observe <layer> error-limit <errorLimit> on-error mark-down`: that many consecutive
 * errors (layer7: 500, 502-504, 506+, timeouts and connection failures; layer4: connection
 * failures) mark a server down; a health check `ejectMs` later brings it back when it passes.
 */
export interface ServerPassiveHealth {
  observe: 'layer4' | 'layer7';
  errorLimit: number;
  ejectMs: number;
}

export interface Backend {
  name: string;
  mode: Mode;
  /**
   * Dynamic algorithms only (the runtime API adds servers to those alone): `random` draws that
   * many servers and takes the least loaded; `hash` is a consistent hash of the frontend's `txn.lbkey`.
   */
  balance: 'roundrobin' | 'leastconn' | { random: number } | 'hash';
  timeoutConnectMs: number;
  timeoutServerMs: number;
  /** HTTP only: connection pooling between sidecars. */
  httpReuse: 'always' | 'safe' | 'never' | undefined;
  /** TLS towards servers (upstream sidecars); undefined for the local app. */
  tls: ServerTls | undefined;
  /** HTTP/2 towards the servers in clear text (h2c to a local gRPC/HTTP2 app). */
  protoH2: boolean;
  /**
   * HTTP only: the URI SAN (SPIFFE ID) the servers' certificates must carry. HAProxy 2.6 cannot
   * check it during the handshake, so a response from a server without it is replaced by a 502
   * (the request has reached that server by then).
   */
  peerIdentity?: string;
  /**
   * HTTP only: retries of a failed request (`retries`, `retry-on`); absent: the defaults (a failed
   * connect is retried on another server). `count: 0` retries nothing.
   */
  retries?: { count: number; on: readonly string[] };
  /** HTTP only: the server timeout comes per request from the route (`txn.rto`), when set. */
  routeTimeout?: boolean;
  /**
   * Circuit breaker (an upstream's `limits`): the most streams the backend serves at once (TCP
   * connections, or HTTP requests in flight); one more is refused (TCP: closed; HTTP: 503).
   */
  maxActive?: number;
  /** Outlier ejection (an upstream's `passive_health_check`), on every server of the backend. */
  passiveHealth?: ServerPassiveHealth;
  servers: Server[];
}

export interface HaproxyModel {
  global: Global;
  files: ModelFile[];
  frontends: Frontend[];
  backends: Backend[];
}
