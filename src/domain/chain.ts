/**
 * What an upstream resolves to: its discovery chain, a list of targets, each one set of instances
 * of one service (or prepared query) in one datacenter, watched on its own. PURE.
 *
 * Without discovery-chain config entries (or for a prepared query) the chain is trivial: one
 * target, the upstream's destination. Consul's compiled chain (consul/discovery-chain.ts) adds
 * subsets, redirects, failover and, for HTTP upstreams, routes; the watch set and the snapshot are
 * keyed by target, so two upstreams that reach the same target share one watch.
 */
import { DEFAULT_PARTITION } from './consul.js';
import type { Chain, Target, Upstream } from './snapshot.js';

export type { Chain, Target } from './snapshot.js';

/** The target an upstream's destination names, its datacenter resolved against the local one. */
export function destinationTarget(upstream: Upstream, localDatacenter: string): Target {
  const datacenter = upstream.datacenter === '' ? localDatacenter : upstream.datacenter;
  const base = { service: upstream.destinationName, namespace: upstream.destinationNamespace, partition: DEFAULT_PARTITION, datacenter };
  return upstream.destinationType === 'prepared_query'
    ? { ...base, kind: 'prepared_query', id: `query:${upstream.destinationName}.${datacenter}` }
    : { ...base, kind: 'service', id: `${upstream.destinationName}.${upstream.destinationNamespace}.${DEFAULT_PARTITION}.${datacenter}` };
}

/** The chain of an upstream without discovery-chain config entries: its destination alone. */
export function trivialChain(upstream: Upstream, localDatacenter: string): Chain {
  return { targets: [destinationTarget(upstream, localDatacenter)] };
}

/**
 * An upstream's chain: a prepared query's is trivial (it has no discovery chain); a service's is
 * the one Consul compiled (`compiled`, by upstream key), undefined until it arrives.
 */
export function chainOf(upstream: Upstream, compiled: ReadonlyMap<string, Chain>, localDatacenter: string): Chain | undefined {
  return upstream.destinationType === 'prepared_query' ? trivialChain(upstream, localDatacenter) : compiled.get(upstream.key);
}
