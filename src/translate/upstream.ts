/**
 * An upstream → its listener (frontend) and one backend per target of its chain. PURE.
 *
 * A TCP upstream, and an HTTP upstream whose chain is one plain route (no router or splitter, or
 * ones that change nothing), get the primary target's backend as default and the failover targets
 * after it. Any other HTTP chain gets routes (routes.ts).
 */
import { LEAF_FILE, ROOTS_FILE, endpointServerName, upstreamBackendName, upstreamFrontendName } from '../domain/haproxy-names.js';
import type { Chain, DroppedItem, Endpoint, Snapshot, Target, Upstream } from '../domain/snapshot.js';
import type { Backend, Frontend, Server } from '../haproxy/model.js';
import { checkServer, modelProblem } from '../haproxy/validate.js';
import { DEFAULT_HTTP_REQUEST_TIMEOUT_MS, TCP_IDLE_TIMEOUT_MS, clampWeight, frontendTimeouts, modeOf, upstreamAlpn } from './defaults.js';
import { isPlainRoute, routedProxies } from './routes.js';
import { backendLimits } from './limits.js';
import { type BackendFactory, balanceOf, healthyEndpoints, targetBackendName, targetIdentity } from './targets.js';
import { compareStrings } from './tls-files.js';

/** Retries of an HTTP upstream without a route retry policy: none, as Envoy (L7.md §2.2). */
export const NO_RETRIES: NonNullable<Backend['retries']> = { count: 0, on: [] };

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

function backendFactory(upstream: Upstream, snapshot: Snapshot, dropped: DroppedItem[]): BackendFactory {
  const mode = modeOf(upstream.protocol);
  const base = (name: string, balance: Backend['balance'], target: Target | undefined): Backend => {
    // HTTP: a response from an instance that is not the target's service is refused (502).
    const identity = mode === 'http' && target?.kind === 'service' ? targetIdentity(target, snapshot.roots.trustDomain) : undefined;
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
      ...(mode === 'http' && { retries: NO_RETRIES }),
      ...backendLimits(upstream),
      servers: [],
    };
  };
  return {
    upstream,
    forTarget: (name, target, balance, extra) => ({
      ...base(name, balance, target),
      ...extra,
      servers: upstreamServers(upstream.key, healthyEndpoints(snapshot.targets.get(target.id) ?? [], target), dropped),
    }),
    empty: (name) => base(name, 'roundrobin', undefined),
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
    // Envoy's outbound listeners SANITIZE: an application cannot forge a client certificate downstream.
    ...(mode === 'http' && { xfcc: 'sanitize' as const }),
    accessLog: undefined,
  };
}

/**
 * The primary target serves, the failover targets follow in order, each when every one before it
 * has no healthy instance. An upstream whose chain has not been answered yet (or has no usable
 * target) gets one empty backend.
 */
function failoverProxies(factory: BackendFactory, chain: Chain | undefined): { frontend: Frontend; backends: Backend[] } {
  const { upstream } = factory;
  const mode = modeOf(upstream.protocol);
  const balance = balanceOf(chain?.loadBalancer, mode);
  const targets = chain?.targets ?? [];
  const route = chain?.routes?.[0];
  const timeoutServerMs = mode === 'http' ? (route?.requestTimeoutMs ?? DEFAULT_HTTP_REQUEST_TIMEOUT_MS) : TCP_IDLE_TIMEOUT_MS;
  const backends =
    targets.length === 0
      ? [factory.empty(upstreamBackendName(upstream.key))]
      : targets.map((target, index) => factory.forTarget(targetBackendName(upstream, target, index), target, balance, { timeoutServerMs }));
  const [first, ...failover] = backends.map((b) => b.name);
  const frontend = upstreamFrontend(upstream, first as string);
  if (failover.length > 0) frontend.failoverBackends = failover;
  if (balance === 'hash' && (chain?.loadBalancer?.hashPolicies.length ?? 0) > 0) {
    frontend.hashKey = chain?.loadBalancer?.hashPolicies.map((p) => ({ sample: p.source, terminal: p.terminal }));
  }
  return { frontend, backends };
}

/** An upstream's listener, its backends, and the split cut points its routes need in the splits map. */
export interface UpstreamProxies {
  frontend: Frontend;
  backends: Backend[];
  splits: Array<readonly [string, number]>;
}

export function upstreamProxies(upstream: Upstream, snapshot: Snapshot, dropped: DroppedItem[]): UpstreamProxies {
  const chain = snapshot.chains.get(upstream.key);
  for (const reason of chain?.refused ?? []) dropped.push({ kind: 'target', item: upstream.key, reason });
  const factory = backendFactory(upstream, snapshot, dropped);
  const routes = chain?.routes;
  if (chain === undefined || routes === undefined || modeOf(upstream.protocol) === 'tcp' || (routes.length <= 1 && isPlainRoute(routes[0], chain))) {
    return { ...failoverProxies(factory, chain), splits: [] };
  }
  const routed = routedProxies(factory, chain, routes);
  const frontend: Frontend = { ...upstreamFrontend(upstream, routed.defaultBackend), routes: routed.routes };
  return { frontend, backends: routed.backends, splits: routed.splits };
}
