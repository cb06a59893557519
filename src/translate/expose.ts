/**
 * Proxy.Expose → plain HTTP listeners that forward exactly their paths to the local application,
 * as Consul 1.16.2 configures Envoy (agent/xds/listeners.go makeExposedCheckListener,
 * agent/xds/clusters.go): one listener per exposed path, no TLS, no intentions, bound on the
 * public listener's address (Config.bind_address, else the proxy's Address, else 0.0.0.0), an
 * exact match on the request's path (the query is not part of it), any other path 404 with an
 * empty body (Envoy's answer when no route matches), forwarded in HTTP/1.1 or, for `http2` and
 * gRPC checks, HTTP/2 in clear text to the app on LocalPathPort. PURE.
 *
 * The paths are the registration's `Expose.Paths`, then, with `Expose.Checks`, one per HTTP or
 * gRPC check the agent reroutes through the sidecar (its ExposedPort; the app's port is the
 * proxy's LocalServicePort, because the agent's API does not publish the check's own URL).
 * Paths that share a listener port and a target are served by one listener. What cannot be
 * served is left out and reported, naming both sides of a collision; the rest applies:
 * a path whose port is that of another listener (the public one, an upstream, a reserved one
 * such as -stats-addr, or another exposed path with another target), or whose bind HAProxy
 * cannot take.
 */
import type { Backend, Bind, Frontend } from '../haproxy/model.js';
import { bindsConflict, checkBind, modelProblem } from '../haproxy/validate.js';
import type { DroppedItem, Snapshot } from '../domain/snapshot.js';
import { exposePathProblem, type ExposePath } from '../domain/expose.js';
import { LOCAL_APP_SERVER_NAME } from '../domain/haproxy-names.js';
import { frontendAccessLog } from './access-log.js';
import { DEFAULT_HTTP_REQUEST_TIMEOUT_MS, NO_REQUEST_TIMEOUT_MS, frontendTimeouts } from './defaults.js';
import { compareStrings } from './tls-files.js';

/** A port exposed paths must not take: the daemon's -stats-addr, or one another process holds. */
export interface ReservedListener {
  /** Completes "its listener <address:port> ...": `overlaps -stats-addr 127.0.0.1:9102`, `cannot be bound (EADDRINUSE: ...)`. */
  conflict: string;
  address: string;
  port: number;
}

export const EXPOSED_FRONTEND_PREFIX = 'exposed_path_';
/** Consul's cluster name for an exposed path's app port (agent/xds/clusters.go makeExposeClusterName). */
export const EXPOSED_CLUSTER_PREFIX = 'exposed_cluster_';

interface ExposedListener {
  port: number;
  localPathPort: number;
  protocol: ExposePath['protocol'];
  /** The paths' sources, the first one defines the target. */
  sources: string[];
  paths: Set<string>;
}

/** The paths to serve: the registration's, then those of the checks the agent reroutes (when Expose.Checks). */
export function exposedPaths(snapshot: Snapshot): ExposePath[] {
  const { registration } = snapshot;
  const expose = registration.expose;
  if (expose === undefined) return [];
  const paths = [...expose.paths];
  if (expose.checks) {
    for (const check of snapshot.exposedChecks ?? []) {
      // An HTTP check's path is known once the agent has run it (expose.ts); until then no listener.
      if (check.path === undefined) continue;
      paths.push({
        source: `check '${check.checkId}'`,
        listenerPort: check.exposedPort,
        path: check.path,
        localPathPort: registration.publicListener.localServicePort,
        protocol: check.type === 'grpc' ? 'http2' : 'http',
      });
    }
  }
  return paths;
}

function describeTarget(l: { localPathPort: number; protocol: string }): string {
  return `app port ${l.localPathPort} over ${l.protocol}`;
}

/** Frontends and backends for the exposed paths; `taken` are the listeners already in the model. */
export function exposeProxies(snapshot: Snapshot, taken: readonly Frontend[], reserved: readonly ReservedListener[], dropped: DroppedItem[]): { frontends: Frontend[]; backends: Backend[] } {
  const { registration } = snapshot;
  for (const problem of registration.expose?.refused ?? []) dropped.push({ kind: 'expose', item: problem.item, reason: problem.reason });

  const listeners = new Map<number, ExposedListener>();
  for (const path of exposedPaths(snapshot)) {
    // The registration's paths were checked when parsed; a check's path comes from its output.
    const pathProblem = exposePathProblem(path.path);
    if (pathProblem !== undefined) {
      dropped.push({ kind: 'expose', item: path.source, reason: `${path.source} path ${JSON.stringify(path.path)} ${pathProblem}; it is left out` });
      continue;
    }
    const listener = listeners.get(path.listenerPort);
    if (listener === undefined) {
      listeners.set(path.listenerPort, { port: path.listenerPort, localPathPort: path.localPathPort, protocol: path.protocol, sources: [path.source], paths: new Set([path.path]) });
    } else if (listener.localPathPort === path.localPathPort && listener.protocol === path.protocol) {
      listener.sources.push(path.source);
      listener.paths.add(path.path);
    } else {
      dropped.push({
        kind: 'expose',
        item: path.source,
        reason: `${path.source} (path '${path.path}' to ${describeTarget(path)}) and ${listener.sources[0]} (${describeTarget(listener)}) both listen on port ${path.listenerPort}; ${path.source} is left out`,
      });
    }
  }

  const listener = registration.publicListener;
  const frontends: Frontend[] = [];
  const backends = new Map<string, Backend>();
  const occupied = [...taken];
  for (const exposed of [...listeners.values()].sort((a, b) => a.port - b.port)) {
    const bind: Bind = { kind: 'inet', address: listener.bindAddress, port: exposed.port };
    const backendName = `${EXPOSED_CLUSTER_PREFIX}${exposed.localPathPort}${exposed.protocol === 'http2' ? '_h2' : ''}`;
    const frontend: Frontend = {
      name: `${EXPOSED_FRONTEND_PREFIX}${exposed.port}`,
      mode: 'http',
      bind,
      tls: undefined,
      defaultBackend: backendName,
      ...frontendTimeouts('http'),
      maxconn: undefined,
      spoe: undefined,
      accessLog: frontendAccessLog(registration.accessLogs, 'http', `${EXPOSED_CLUSTER_PREFIX}${exposed.localPathPort}`),
      exposedPaths: [...exposed.paths].sort(compareStrings),
    };
    const other = occupied.find((f) => bindsConflict(f.bind, bind));
    const otherReserved = reserved.find((r) => bindsConflict({ kind: 'inet', address: r.address, port: r.port }, bind));
    const problem =
      other !== undefined
        ? `its listener ${bind.address}:${bind.port} overlaps the listener of frontend '${other.name}'`
        : otherReserved !== undefined
          ? `its listener ${bind.address}:${bind.port} ${otherReserved.conflict}`
          : modelProblem(() => checkBind(frontend));
    if (problem !== undefined) {
      for (const source of exposed.sources) dropped.push({ kind: 'expose', item: source, reason: `${source}: ${problem}; it is left out` });
      continue;
    }
    occupied.push(frontend);
    frontends.push(frontend);
    if (!backends.has(backendName)) {
      const timeout = listener.localRequestTimeoutMs ?? DEFAULT_HTTP_REQUEST_TIMEOUT_MS;
      backends.set(backendName, {
        name: backendName,
        mode: 'http',
        balance: 'roundrobin',
        timeoutConnectMs: listener.localConnectTimeoutMs,
        timeoutServerMs: timeout === 0 ? NO_REQUEST_TIMEOUT_MS : timeout,
        httpReuse: undefined,
        tls: undefined,
        protoH2: exposed.protocol === 'http2',
        servers: [{ name: LOCAL_APP_SERVER_NAME, address: listener.localServiceAddress, port: exposed.localPathPort, weight: 1 }],
      });
    }
  }
  return { frontends, backends: [...backends.values()].sort((a, b) => compareStrings(a.name, b.name)) };
}
