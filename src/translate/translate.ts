/**
 * Snapshot → HAProxy model. PURE: no files, sockets, clock or environment; the same snapshot and
 * options always give the same model (everything is sorted), so the planner can diff models and
 * golden tests can pin the rendered text.
 */
import type { Backend, Frontend, HaproxyModel, Mode, Server } from '../haproxy/model.js';
import {
  ADMIN_SOCKET_FILE,
  LEAF_FILE,
  LOG_RING_NAME,
  LOG_SOCKET_FILE,
  LOCAL_APP_BACKEND_NAME,
  LOCAL_APP_SERVER_NAME,
  PUBLIC_CRT_LIST_FILE,
  PUBLIC_FRONTEND_NAME,
  ROOTS_FILE,
  STATS_FRONTEND_NAME,
  STATS_SOCKET_FILE,
  endpointServerName,
  fnv1a32Hex,
  upstreamBackendName,
  upstreamFrontendName,
} from '../domain/haproxy-names.js';
import { bindsConflict, checkAccessLog, checkBackend, checkBind, checkFrontend, checkServer, modelProblem, validateModel } from '../haproxy/validate.js';
import { HaproxyConnectError } from '../errors.js';
import { certificateProblem } from '../domain/certificates.js';
import type { CaRoot, DroppedItem, Endpoint, Protocol, PublicListener, Roots, Snapshot, Target, Upstream } from '../domain/snapshot.js';
import { balanceOf, healthyEndpoints, targetIdentity } from './targets.js';
import { LOCAL_APP_CLUSTER, frontendAccessLog, upstreamCluster } from './access-log.js';
import { intentionsEnforcement, intentionsEpoch } from './spoe.js';
import { compareStrings, leafFile, publicCrtListFile, rootsFile } from './tls-files.js';

export interface TranslateOptions {
  /** Absolute run directory (certificates, sockets, haproxy.cfg). */
  runDir: string;
  /** Threads per worker; undefined lets HAProxy choose (one per CPU it may run on). */
  nbthread?: number;
  /** Global connection limit; DEFAULT_MAXCONN when absent. */
  maxconn?: number;
  /** `hard-stop-after`; DEFAULT_HARD_STOP_AFTER_MS when absent (raised to the shutdown grace period). */
  hardStopAfterMs?: number;
}

/** Old workers get this long to finish their connections after a reload, then they are killed. */
export const DEFAULT_HARD_STOP_AFTER_MS = 30_000;

/**
 * Global maxconn when the operator gives none. An explicit maxconn makes HAProxy need about
 * 2 x maxconn file descriptors and refuse to start when the hard RLIMIT_NOFILE is lower
 * (measured: 10,000 needs 20,028 and failed under a hard limit of 20,000). 4,096 needs about
 * 8,200, below common hard limits; raise it with the maxconn option.
 */
export const DEFAULT_MAXCONN = 4_096;
/**
 * Request timeout towards an HTTP application when `local_request_timeout_ms` is absent: Consul's
 * documented default for its Envoy sidecar (Envoy's route timeout). Also used for HTTP upstreams,
 * where Envoy applies the same route default.
 */
export const DEFAULT_HTTP_REQUEST_TIMEOUT_MS = 15_000;
/** Idle timeout of TCP proxying in both directions: Envoy's tcp_proxy `idle_timeout` default (1 h). */
export const TCP_IDLE_TIMEOUT_MS = 3_600_000;
/**
 * `local_request_timeout_ms: 0` means "no timeout" in Consul. HAProxy treats a zero timeout as
 * a misconfiguration (it warns and never frees a stuck connection), so use the long idle bound.
 */
export const NO_REQUEST_TIMEOUT_MS = TCP_IDLE_TIMEOUT_MS;
/** HTTP client inactivity: Envoy's `stream_idle_timeout` default (5 min). */
export const HTTP_CLIENT_IDLE_TIMEOUT_MS = 300_000;
/** Time a client has to send complete request headers (also the keep-alive idle bound). */
export const HTTP_REQUEST_HEADERS_TIMEOUT_MS = 10_000;
/**
 * HAProxy server weights range 0..256; Consul's `Weights.Passing` goes up to 65535. Weights are
 * clamped (not rescaled per backend), so one endpoint's change never rewrites its siblings'
 * weights; ratios above 256:1 are lost, which Consul deployments rarely use.
 */
export const MAX_HAPROXY_WEIGHT = 256;
/** Weight of the single local application server (the value is irrelevant with one server). */
const LOCAL_APP_WEIGHT = 1;

/** ALPN the public listener offers: HTTP/2 first for h2 peers, HTTP/1.1 for the rest. */
const PUBLIC_ALPN_H2: readonly string[] = ['h2', 'http/1.1'];
const ALPN_HTTP1: readonly string[] = ['http/1.1'];
const ALPN_H2_ONLY: readonly string[] = ['h2'];

function modeOf(protocol: Protocol): Mode {
  return protocol === 'tcp' ? 'tcp' : 'http';
}

function isH2(protocol: Protocol): boolean {
  return protocol === 'http2' || protocol === 'grpc';
}

function publicAlpn(protocol: Protocol): string[] | undefined {
  if (protocol === 'tcp') return undefined;
  return [...(isH2(protocol) ? PUBLIC_ALPN_H2 : ALPN_HTTP1)];
}

/** ALPN towards an upstream sidecar: its public listener speaks the upstream's protocol. */
function upstreamAlpn(protocol: Protocol): string[] | undefined {
  if (protocol === 'tcp') return undefined;
  return [...(isH2(protocol) ? ALPN_H2_ONLY : ALPN_HTTP1)];
}

function frontendTimeouts(mode: Mode): Pick<Frontend, 'timeoutClientMs' | 'timeoutHttpRequestMs'> {
  return mode === 'tcp'
    ? { timeoutClientMs: TCP_IDLE_TIMEOUT_MS, timeoutHttpRequestMs: undefined }
    : { timeoutClientMs: HTTP_CLIENT_IDLE_TIMEOUT_MS, timeoutHttpRequestMs: HTTP_REQUEST_HEADERS_TIMEOUT_MS };
}

function localRequestTimeoutMs(listener: PublicListener): number {
  const configured = listener.localRequestTimeoutMs ?? DEFAULT_HTTP_REQUEST_TIMEOUT_MS;
  return configured === 0 ? NO_REQUEST_TIMEOUT_MS : configured;
}

function clampWeight(weight: number): number {
  if (!Number.isFinite(weight)) return 1;
  return Math.min(MAX_HAPROXY_WEIGHT, Math.max(0, Math.round(weight)));
}

function publicListenerProxies(listener: PublicListener): { frontend: Frontend; backend: Backend } {
  const mode = modeOf(listener.protocol);
  const frontend: Frontend = {
    name: PUBLIC_FRONTEND_NAME,
    mode,
    bind: { kind: 'inet', address: listener.bindAddress, port: listener.bindPort },
    tls: { crtList: PUBLIC_CRT_LIST_FILE, alpn: publicAlpn(listener.protocol) },
    defaultBackend: LOCAL_APP_BACKEND_NAME,
    ...frontendTimeouts(mode),
    maxconn: undefined,
    spoe: undefined,
    accessLog: undefined,
  };
  const backend: Backend = {
    name: LOCAL_APP_BACKEND_NAME,
    mode,
    balance: 'roundrobin',
    timeoutConnectMs: listener.localConnectTimeoutMs,
    timeoutServerMs: mode === 'tcp' ? TCP_IDLE_TIMEOUT_MS : localRequestTimeoutMs(listener),
    httpReuse: undefined,
    tls: undefined,
    protoH2: isH2(listener.protocol),
    servers: [
      {
        name: LOCAL_APP_SERVER_NAME,
        address: listener.localServiceAddress,
        port: listener.localServicePort,
        weight: LOCAL_APP_WEIGHT,
      },
    ],
  };
  return { frontend, backend };
}

/**
 * One server per endpoint id (first wins after sorting), sorted by server name. An endpoint whose
 * values HAProxy cannot take (an address like "bad host#1", port 0) is left out and reported.
 */
function upstreamServers(upstreamKey: string, endpoints: readonly Endpoint[], dropped: DroppedItem[]): Server[] {
  const byName = new Map<string, Server>();
  const sorted = [...endpoints].sort((a, b) => compareStrings(a.id, b.id));
  for (const endpoint of sorted) {
    const item = `${upstreamKey} ${endpoint.id}`;
    if (endpoint.invalid !== undefined) {
      dropped.push({ kind: 'endpoint', item, reason: endpoint.invalid });
      continue;
    }
    const name = endpointServerName(endpoint.id);
    if (byName.has(name)) continue;
    const server: Server = { name, address: endpoint.address, port: endpoint.port, weight: clampWeight(endpoint.weight) };
    const problem = modelProblem(() => checkServer('instance', server));
    if (problem !== undefined) {
      dropped.push({ kind: 'endpoint', item, reason: problem });
      continue;
    }
    byName.set(name, server);
  }
  return [...byName.values()].sort((a, b) => compareStrings(a.name, b.name));
}

/**
 * The backend of one target of an upstream's chain. The chain's first target keeps the name the
 * upstream's backend always had (`upstream_<key>_be`), so a trivial chain renders exactly as
 * before; further targets (the discovery chain's) get the target's hash appended.
 */
function targetBackendName(upstream: Upstream, target: Target, index: number): string {
  const base = upstreamBackendName(upstream.key);
  return index === 0 ? base : `${base}_${fnv1a32Hex(target.id)}`;
}

function targetBackend(upstream: Upstream, name: string, servers: Server[], target: Target | undefined, balance: Backend['balance'], trustDomain: string): Backend {
  const mode = modeOf(upstream.protocol);
  // HTTP: a response from an instance that is not the target's service is refused (502).
  const identity = mode === 'http' && target?.kind === 'service' ? targetIdentity(target, trustDomain) : undefined;
  return {
    name,
    mode,
    balance,
    timeoutConnectMs: target?.connectTimeoutMs ?? upstream.connectTimeoutMs,
    timeoutServerMs: mode === 'tcp' ? TCP_IDLE_TIMEOUT_MS : DEFAULT_HTTP_REQUEST_TIMEOUT_MS,
    // The peer is our own sidecar: reusing its mTLS connections is safe and 25x faster (FACTS.md §3).
    httpReuse: mode === 'http' ? 'always' : undefined,
    // No `sni`: it breaks verification against Consul leaves (FACTS.md §2).
    tls: { crt: LEAF_FILE, caFile: ROOTS_FILE, alpn: upstreamAlpn(upstream.protocol) },
    protoH2: false,
    ...(identity !== undefined && { peerIdentity: identity }),
    servers,
  };
}

function upstreamFrontend(upstream: Upstream, defaultBackend: string): Frontend {
  const mode = modeOf(upstream.protocol);
  return {
    name: upstreamFrontendName(upstream.key),
    mode,
    bind:
      upstream.localBindSocketPath !== undefined && upstream.localBindSocketPath !== ''
        ? { kind: 'unix', path: upstream.localBindSocketPath, mode: upstream.localBindSocketMode }
        : { kind: 'inet', address: upstream.localBindAddress, port: upstream.localBindPort },
    tls: undefined,
    defaultBackend,
    ...frontendTimeouts(mode),
    maxconn: undefined,
    spoe: undefined,
    accessLog: undefined,
  };
}

/**
 * An upstream's listener and one backend per target of its chain: the primary target serves, the
 * failover targets follow in order, each when every one before it has no healthy instance. An
 * upstream whose chain has not been answered yet (or has no usable target) gets one empty backend.
 */
function upstreamProxies(upstream: Upstream, snapshot: Snapshot, dropped: DroppedItem[]): { frontend: Frontend; backends: Backend[] } {
  const chain = snapshot.chains.get(upstream.key);
  for (const reason of chain?.refused ?? []) dropped.push({ kind: 'target', item: upstream.key, reason });
  const mode = modeOf(upstream.protocol);
  const balance = balanceOf(chain?.loadBalancer, mode);
  const targets = chain?.targets ?? [];
  const backends =
    targets.length === 0
      ? [targetBackend(upstream, upstreamBackendName(upstream.key), [], undefined, balance, snapshot.roots.trustDomain)]
      : targets.map((target, index) =>
          targetBackend(
            upstream,
            targetBackendName(upstream, target, index),
            upstreamServers(upstream.key, healthyEndpoints(snapshot.targets.get(target.id) ?? [], target), dropped),
            target,
            balance,
            snapshot.roots.trustDomain,
          ),
        );
  const [first, ...failover] = backends.map((b) => b.name);
  const frontend = upstreamFrontend(upstream, first as string);
  if (failover.length > 0) frontend.failoverBackends = failover;
  if (balance === 'hash' && (chain?.loadBalancer?.hashPolicies.length ?? 0) > 0) {
    frontend.hashKey = chain?.loadBalancer?.hashPolicies.map((p) => ({ sample: p.source, terminal: p.terminal }));
  }
  return { frontend, backends };
}

/** The model, and the items left out of it because their data from Consul cannot be used. */
export interface Translation {
  model: HaproxyModel;
  dropped: DroppedItem[];
}

/**
 * Bad data about one instance, upstream or root leaves that item out (reported in `dropped`);
 * everything else is translated. Throws MODEL_INVALID only when no safe configuration is left:
 * the public listener itself is unusable, or no CA root can be read.
 */
export function translate(snapshot: Snapshot, options: TranslateOptions): Translation {
  const { registration } = snapshot;
  const dropped: DroppedItem[] = [...(registration.droppedUpstreams ?? [])];
  const publicListener = publicListenerProxies(registration.publicListener);
  // Enforced intentions: the public listener asks our SPOE agent about every new connection.
  const enforcement = snapshot.intentions === undefined ? undefined : intentionsEnforcement(options.runDir, intentionsEpoch(snapshot.intentions, snapshot.roots.trustDomain));
  const accessLogs = registration.accessLogs;
  const frontends: Frontend[] = [
    {
      ...publicListener.frontend,
      spoe: enforcement?.spoe,
      accessLog: frontendAccessLog(accessLogs, publicListener.frontend.mode, LOCAL_APP_CLUSTER),
    },
  ];
  const backends: Backend[] = [publicListener.backend];
  const roots = readableRoots(snapshot.roots, dropped);
  const global = globalSection(options);
  const files = [leafFile(snapshot.leaf, roots), publicCrtListFile(publicListener.frontend.tls?.alpn), rootsFile(roots, snapshot.leaf), ...(enforcement?.files ?? [])].sort((a, b) =>
    compareStrings(a.name, b.name),
  );
  const fileMap = new Map(files.map((f) => [f.name, f]));

  const upstreams = [...registration.upstreams].sort((a, b) => compareStrings(a.key, b.key));
  for (const upstream of upstreams) {
    // Instances left out while translating an upstream that is left out itself are not reported twice.
    const instanceDrops: DroppedItem[] = [];
    const proxies = upstreamProxies(upstream, snapshot, instanceDrops);
    const cluster = upstreamCluster(upstream, snapshot.datacenter, snapshot.roots.trustDomain);
    const frontend = { ...proxies.frontend, accessLog: frontendAccessLog(accessLogs, proxies.frontend.mode, cluster) };
    const taken = frontends.find((f) => bindsConflict(f.bind, frontend.bind));
    const problem =
      taken !== undefined
        ? `its listener ${describeBind(frontend.bind)} overlaps the listener of frontend '${taken.name}'`
        : modelProblem(() => {
            for (const backend of proxies.backends) checkBackend(backend, fileMap);
            checkBind(frontend);
            checkFrontend(frontend, new Map(proxies.backends.map((b) => [b.name, b])), fileMap);
            checkAccessLog(frontend, global);
          });
    if (problem !== undefined) {
      dropped.push({ kind: 'upstream', item: upstream.key, reason: problem });
      continue;
    }
    dropped.push(...instanceDrops);
    frontends.push(frontend);
    backends.push(...proxies.backends);
  }

  const model: HaproxyModel = { global, files, frontends, backends };
  validateModel(model);
  return { model, dropped };
}

function describeBind(bind: Frontend['bind']): string {
  return bind.kind === 'unix' ? `unix@${bind.path}` : `${bind.address}:${bind.port}`;
}

function globalSection(options: TranslateOptions): HaproxyModel['global'] {
  return {
    runDir: options.runDir,
    adminSocket: ADMIN_SOCKET_FILE,
    // Always there (a unix socket only we can open): -stats-addr scrapes it, and an operator can too.
    stats: { frontend: STATS_FRONTEND_NAME, socket: STATS_SOCKET_FILE },
    // HAProxy's messages (and access logs) always go to the daemon's receiver.
    logs: { ring: LOG_RING_NAME, socket: LOG_SOCKET_FILE },
    nbthread: options.nbthread,
    maxconn: options.maxconn ?? DEFAULT_MAXCONN,
    hardStopAfterMs: options.hardStopAfterMs ?? DEFAULT_HARD_STOP_AFTER_MS,
  };
}

/**
 * The roots whose certificate parses; the others are left out and reported (a garbage root in the
 * bundle would make `haproxy -c` refuse every configuration). None readable: no safe configuration.
 */
function readableRoots(roots: Roots, dropped: DroppedItem[]): Roots {
  const kept: CaRoot[] = [];
  let changed = false;
  for (const root of roots.roots) {
    const problem = certificateProblem(root.rootCertPem);
    if (problem !== undefined) {
      dropped.push({ kind: 'root', item: root.id, reason: `its RootCert ${problem}` });
      changed = true;
      continue;
    }
    // Intermediates go into leaf.pem (the active root's) and the bridge check: a bad one is left out alone.
    const intermediates = root.intermediateCertsPem.filter((pem, i) => {
      const bad = certificateProblem(pem);
      if (bad !== undefined) dropped.push({ kind: 'root', item: `${root.id} IntermediateCerts[${i}]`, reason: `it ${bad}` });
      return bad === undefined;
    });
    changed ||= intermediates.length !== root.intermediateCertsPem.length;
    kept.push(intermediates.length === root.intermediateCertsPem.length ? root : { ...root, intermediateCertsPem: intermediates });
  }
  if (kept.length === 0) {
    throw new HaproxyConnectError(
      'MODEL_INVALID',
      `Invalid HAProxy model: none of the ${roots.roots.length} CA roots from Consul can be read (${roots.roots.map((r) => r.id).join(', ') || 'no roots'})`,
    );
  }
  return changed ? { ...roots, roots: kept } : roots;
}
