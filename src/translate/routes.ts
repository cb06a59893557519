/**
 * An HTTP upstream's routes (service-router, service-splitter) → the frontend's routes and one
 * backend per (target, retry policy): HAProxy's `retries` and `retry-on` exist only in backends,
 * so a route with its own retry policy gets its own backends of the same servers. PURE.
 *
 * Split weights are not in the frontend: they go into the splits map as cut points, so a weight
 * change is applied at runtime (`set map`), never by a reload.
 */
import { isDeepStrictEqual } from '../builtins.js';
import { type Route, TOTAL_SPLIT_WEIGHT, matchesEverything, noHeaderOps } from '../domain/routes.js';
import type { Chain, Target } from '../domain/snapshot.js';
import type { Backend, FrontendRoute, FrontendRouteLeg } from '../haproxy/model.js';
import { DEFAULT_HTTP_REQUEST_TIMEOUT_MS } from './defaults.js';
import { type BackendFactory, balanceOf, targetBackendName } from './targets.js';
import { routeSplitKey, upstreamBackendName, upstreamFrontendName } from '../domain/haproxy-names.js';

/**
 * A chain of one route that needs no routing: it takes every request to one resolver, changes no
 * header or path and retries nothing, so the upstream renders as the primary target's backend with
 * its failover targets (as TCP upstreams and chains without router or splitter always have).
 */
export function isPlainRoute(route: Route | undefined, chain: Chain): boolean {
  if (route === undefined) return true;
  const [leg, ...more] = route.legs;
  return (
    leg !== undefined &&
    more.length === 0 &&
    matchesEverything(route.match) &&
    route.prefixRewrite === undefined &&
    route.retry === undefined &&
    route.idleTimeoutMs === undefined &&
    noHeaderOps(route.requestHeaders) &&
    noHeaderOps(route.responseHeaders) &&
    noHeaderOps(leg.requestHeaders) &&
    noHeaderOps(leg.responseHeaders) &&
    isDeepStrictEqual(
      leg.targets,
      chain.targets.map((t) => t.id),
    ) &&
    isDeepStrictEqual(leg.loadBalancer, chain.loadBalancer)
  );
}

/** A route's server timeout: its RequestTimeout (Envoy's default 15 s), bounded by its IdleTimeout. */
function routeTimeoutMs(route: Route): number {
  const request = route.requestTimeoutMs ?? DEFAULT_HTTP_REQUEST_TIMEOUT_MS;
  return route.idleTimeoutMs === undefined ? request : Math.min(request, route.idleTimeoutMs);
}

function retryVariant(route: Route): string {
  return route.retry === undefined ? '' : `retry:${route.retry.numRetries}:${route.retry.on.join(',')}`;
}

export interface RoutedProxies {
  routes: FrontendRoute[];
  backends: Backend[];
  defaultBackend: string;
  splits: Array<readonly [string, number]>;
}

export function routedProxies(factory: BackendFactory, chain: Chain, routes: readonly Route[]): RoutedProxies {
  const { upstream } = factory;
  const frontendName = upstreamFrontendName(upstream.key);
  const targets = new Map<string, { target: Target; index: number }>(chain.targets.map((target, index) => [target.id, { target, index }]));
  const backends = new Map<string, Backend>();
  const emptyName = `${upstreamBackendName(upstream.key)}_none`;
  const splits: Array<readonly [string, number]> = [];

  const backendsOf = (route: Route, leg: Route['legs'][number]): string[] => {
    const names = leg.targets.flatMap((id) => {
      const found = targets.get(id);
      if (found === undefined) return [];
      const variant = retryVariant(route);
      const name = targetBackendName(upstream, found.target, found.index, variant);
      if (!backends.has(name)) {
        const retries = route.retry === undefined ? undefined : { count: route.retry.numRetries, on: route.retry.on };
        backends.set(name, factory.forTarget(name, found.target, balanceOf(leg.loadBalancer, 'http'), { routeTimeout: true, ...(retries !== undefined && { retries }) }));
      }
      return [name];
    });
    if (names.length > 0) return names;
    if (!backends.has(emptyName)) backends.set(emptyName, factory.empty(emptyName));
    return [emptyName];
  };

  const frontendRoutes = routes.map((route, k): FrontendRoute => {
    let cut = 0;
    const legs = route.legs.map((leg, i): FrontendRouteLeg => {
      cut += leg.weight;
      if (route.legs.length > 1 && i < route.legs.length - 1) splits.push([routeSplitKey(frontendName, k, i), Math.min(cut, TOTAL_SPLIT_WEIGHT)]);
      return { backends: backendsOf(route, leg), requestHeaders: leg.requestHeaders, responseHeaders: leg.responseHeaders };
    });
    const path = route.match.path;
    return {
      match: route.match,
      ...(route.prefixRewrite !== undefined && path !== undefined && { prefixRewrite: { prefix: path.value, replacement: route.prefixRewrite } }),
      timeoutServerMs: routeTimeoutMs(route),
      requestHeaders: route.requestHeaders,
      responseHeaders: route.responseHeaders,
      hashKey: route.hashPolicies.map((p) => ({ sample: p.source, terminal: p.terminal })),
      legs,
    };
  });
  const lastRoute = frontendRoutes.at(-1);
  const defaultBackend = lastRoute?.legs[0]?.backends[0] ?? emptyName;
  if (!backends.has(defaultBackend)) backends.set(defaultBackend, factory.empty(defaultBackend));
  return { routes: frontendRoutes, backends: [...backends.values()], defaultBackend, splits };
}
