/**
 * Snapshot → HAProxy model. PURE: no files, sockets, clock or environment; the same snapshot and
 * options always give the same model (everything is sorted), so the planner can diff models and
 * golden tests can pin the rendered text.
 */
import type { Backend, Frontend, HaproxyModel, ModelFile } from '../haproxy/model.js';
import {
  ADMIN_SOCKET_FILE,
  LOG_RING_NAME,
  LOG_SOCKET_FILE,
  LOCAL_APP_BACKEND_NAME,
  LOCAL_APP_SERVER_NAME,
  PUBLIC_CRT_LIST_FILE,
  PUBLIC_FRONTEND_NAME,
  ROUTE_SPLITS_MAP_FILE,
  STATS_FRONTEND_NAME,
  STATS_SOCKET_FILE,
} from '../domain/haproxy-names.js';
import { bindsConflict, checkAccessLog, checkBackend, checkBind, checkFrontend, modelProblem, validateModel } from '../haproxy/validate.js';
import { HaproxyConnectError } from '../errors.js';
import { certificateProblem } from '../domain/certificates.js';
import type { CaRoot, DroppedItem, PublicListener, Roots, Snapshot } from '../domain/snapshot.js';
import { LOCAL_APP_CLUSTER, frontendAccessLog, upstreamCluster } from './access-log.js';
import { DEFAULT_HARD_STOP_AFTER_MS, DEFAULT_HTTP_REQUEST_TIMEOUT_MS, DEFAULT_MAXCONN, NO_REQUEST_TIMEOUT_MS, TCP_IDLE_TIMEOUT_MS, frontendTimeouts, isH2, modeOf, publicAlpn } from './defaults.js';
import { intentionsEnforcement, intentionsEpoch, renderedPolicies } from './spoe.js';
import { compareStrings, leafFile, publicCrtListFile, rootsFile } from './tls-files.js';
import { upstreamProxies } from './upstream.js';
import { exposeProxies, type ReservedListener } from './expose.js';

export type { ReservedListener } from './expose.js';

export {
  DEFAULT_HARD_STOP_AFTER_MS,
  DEFAULT_HTTP_REQUEST_TIMEOUT_MS,
  DEFAULT_MAXCONN,
  HTTP_CLIENT_IDLE_TIMEOUT_MS,
  HTTP_REQUEST_HEADERS_TIMEOUT_MS,
  MAX_HAPROXY_WEIGHT,
  NO_REQUEST_TIMEOUT_MS,
  TCP_IDLE_TIMEOUT_MS,
} from './defaults.js';

export interface TranslateOptions {
  /** Absolute run directory (certificates, sockets, haproxy.cfg). */
  runDir: string;
  /** Threads per worker; undefined lets HAProxy choose (one per CPU it may run on). */
  nbthread?: number;
  /** Global connection limit; DEFAULT_MAXCONN when absent. */
  maxconn?: number;
  /** `hard-stop-after`; DEFAULT_HARD_STOP_AFTER_MS when absent (raised to the shutdown grace period). */
  hardStopAfterMs?: number;
  /** Ports of this host that exposed paths must not take (the daemon's -stats-addr). */
  reservedListeners?: readonly ReservedListener[];
}

/** Weight of the single local application server (the value is irrelevant with one server). */
const LOCAL_APP_WEIGHT = 1;

function localRequestTimeoutMs(listener: PublicListener): number {
  const configured = listener.localRequestTimeoutMs ?? DEFAULT_HTTP_REQUEST_TIMEOUT_MS;
  return configured === 0 ? NO_REQUEST_TIMEOUT_MS : configured;
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
    // Closed at once by a reload, a request a peer sidecar sent on an idle connection at that
    // moment failed (a 502 at the source). Safe here: the old worker's one more request asks the
    // intentions agent again and goes to the local app. Not on upstream listeners: that request
    // would follow the old routes after a routing change (a redirect test saw 1 of 40).
    ...(mode === 'http' && { keepIdleThroughReload: true }),
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

/** The splits map: one `<frontend>/<route>/<leg> <cut>` line per leg but the last of a split route. */
function splitsMapFile(splits: ReadonlyArray<readonly [string, number]>): ModelFile {
  const lines = [...splits].sort(([a], [b]) => compareStrings(a, b)).map(([key, cut]) => `${key} ${cut}\n`);
  return { name: ROUTE_SPLITS_MAP_FILE, content: lines.join(''), mode: 0o644 };
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
  // On an HTTP listener each request is decided, and L7 permissions apply (render-permissions.ts).
  const http = publicListener.frontend.mode === 'http';
  // X-Forwarded-Client-Cert as Consul configures Envoy's public listener (listeners.go: appended
  // unless the mesh entry sanitizes it or the protocol is grpc); the element comes from the SPOE
  // agent, so without enforced intentions the header is only removed.
  const xfcc = !http
    ? undefined
    : snapshot.intentions !== undefined && !snapshot.mesh.sanitizeXForwardedClientCert && registration.publicListener.protocol !== 'grpc'
      ? ('append' as const)
      : ('sanitize' as const);
  const enforcement =
    snapshot.intentions === undefined
      ? undefined
      : intentionsEnforcement(
          options.runDir,
          intentionsEpoch(snapshot.intentions, snapshot.roots.trustDomain),
          http ? { policies: renderedPolicies(snapshot.intentions), xfcc: xfcc === 'append' } : undefined,
        );
  const accessLogs = registration.accessLogs;
  const frontends: Frontend[] = [
    {
      ...publicListener.frontend,
      spoe: enforcement?.spoe,
      ...(xfcc !== undefined && { xfcc }),
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

  const splits: Array<readonly [string, number]> = [];
  const upstreams = [...registration.upstreams].sort((a, b) => compareStrings(a.key, b.key));
  for (const upstream of upstreams) {
    // Instances left out while translating an upstream that is left out itself are not reported twice.
    const instanceDrops: DroppedItem[] = [];
    const proxies = upstreamProxies(upstream, snapshot, instanceDrops);
    if (proxies.splits.length > 0) proxies.frontend.splitsMapFile = ROUTE_SPLITS_MAP_FILE;
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
    splits.push(...proxies.splits);
  }

  // Exposed paths come last: a path on the port of another listener is the one left out.
  const exposed = exposeProxies(snapshot, frontends, options.reservedListeners ?? [], dropped);
  frontends.push(...exposed.frontends);
  backends.push(...exposed.backends);

  if (splits.length > 0) {
    files.push(splitsMapFile(splits));
    files.sort((a, b) => compareStrings(a.name, b.name));
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
