/**
 * How a target of an upstream's chain becomes a backend, as Envoy would treat it: which instances
 * take traffic, which balance algorithm the chain's LoadBalancer maps to, and which SPIFFE ID the
 * instances must present. PURE.
 */
import { DEFAULT_PARTITION } from '../domain/consul.js';
import { fnv1a32Hex, upstreamBackendName } from '../domain/haproxy-names.js';
import type { Endpoint, LoadBalancer, Target, Upstream } from '../domain/snapshot.js';
import type { Backend, Mode } from '../haproxy/model.js';

/** Envoy's cap on an endpoint's weight (Consul's endpoints.go): weights above it count as 128. */
const ENVOY_MAX_WEIGHT = 128;

/**
 * The instances of a target that take traffic, decided as Envoy decides (agent/xds/endpoints.go):
 * any critical check → unhealthy; a warning → unhealthy only when the subset is OnlyPassing, and
 * weighted by Weights.Warning; a weight below 1 → unhealthy; weights capped at Envoy's 128.
 * Unhealthy instances stay in the snapshot (they are known) but get no server.
 */
export function healthyEndpoints(endpoints: readonly Endpoint[], target: Target): Endpoint[] {
  const healthy: Endpoint[] = [];
  for (const endpoint of endpoints) {
    if (endpoint.invalid !== undefined) {
      healthy.push(endpoint); // reported by upstreamServers
      continue;
    }
    const status = endpoint.status ?? 'passing';
    if (status === 'critical' || (status === 'warning' && target.onlyPassing === true)) continue;
    const weight = status === 'warning' && endpoint.warningWeight !== undefined ? endpoint.warningWeight : endpoint.weight;
    if (!(weight >= 1)) continue;
    healthy.push({ ...endpoint, weight: Math.min(ENVOY_MAX_WEIGHT, weight) });
  }
  return healthy;
}

/** The backends' algorithm for the chain's LoadBalancer (L7.md §2.4). */
export function balanceOf(lb: LoadBalancer | undefined, mode: Mode): Backend['balance'] {
  switch (lb?.policy) {
    case undefined:
    case 'round_robin':
      // A dynamic algorithm: the runtime API can only add servers to such backends (FACTS.md §2).
      return 'roundrobin';
    case 'least_request':
      // Envoy's power of N choices: the least loaded of N random draws.
      return { random: lb.choiceCount };
    case 'random':
      return { random: 1 };
    case 'ring_hash':
    case 'maglev':
      // A TCP chain has no hash policies: Envoy then picks a random host.
      return mode === 'http' ? 'hash' : { random: 1 };
  }
}

/**
 * The SPIFFE ID a target's instances present (Consul's leaf URI SAN): the target's service, whatever
 * its subset; `/ap/<partition>` only outside the default partition.
 */
export function targetIdentity(target: Target, trustDomain: string): string {
  const partition = target.partition === DEFAULT_PARTITION ? '' : `/ap/${target.partition}`;
  return `spiffe://${trustDomain}${partition}/ns/${target.namespace}/dc/${target.datacenter}/svc/${target.service}`;
}

/**
 * The backend name of a target of an upstream's chain. The chain's first target keeps the name the
 * upstream's backend always had (`upstream_<key>_be`), so a trivial chain renders exactly as
 * before; other targets, and targets behind a route with its own retry policy, get a hash appended.
 */
export function targetBackendName(upstream: Upstream, target: Target, index: number, variant = ''): string {
  const base = upstreamBackendName(upstream.key);
  return index === 0 && variant === '' ? base : `${base}_${fnv1a32Hex(variant === '' ? target.id : `${target.id}|${variant}`)}`;
}

/** Builds the backends of an upstream's targets, with the servers of each target's healthy instances. */
export interface BackendFactory {
  upstream: Upstream;
  /** A target's backend; `extra` sets retries or the per-route timeout. */
  forTarget(name: string, target: Target, balance: Backend['balance'], extra: Partial<Pick<Backend, 'retries' | 'routeTimeout' | 'timeoutServerMs'>>): Backend;
  /** An empty backend (a chain or leg without a usable target): every request gets 503. */
  empty(name: string): Backend;
}
