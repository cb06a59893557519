/**
 * A compiled discovery chain (POST /v1/discovery-chain/<name>) → the upstream's Chain: the targets
 * its resolvers use (each resolver's target, then its failover targets in order, each with its
 * subset filter, OnlyPassing and connect timeout), the start resolver's LoadBalancer. PURE.
 *
 * Redirects and default subsets need nothing here: Consul compiles them into the targets. The
 * chain is asked for with the upstream's protocol, so a `tcp` upstream never sees routers or
 * splitters (Consul drops them); an HTTP chain's routes are read by chain-routes.ts, and its
 * targets are every target a route reaches.
 *
 * What cannot be honoured is refused by name in `refused` and left out; the rest applies:
 * - a target in another datacenter whose mesh gateway mode is `local` or `remote` (it needs SNI,
 *   which HAProxy 2.6 cannot combine with verifying Consul leaves: L7.md §2.6);
 * - a target of a cluster peer (peering is not supported).
 * A TCP chain that does not start at a resolver, a chain that names a node or target it does not
 * define, or has an unknown load balancer policy, is an error: the watch keeps the last good chain.
 */
import { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from '../domain/consul.js';
import type { Chain, HashPolicy, LoadBalancer, Target } from '../domain/snapshot.js';
import { HaproxyConnectError, isHaproxyConnectError } from '../errors.js';
import { parseDurationMs } from './duration.js';
import type { DiscoveryChainJson } from './schemas.js';
import { type ResolvedNode, routesOf } from './chain-routes.js';

/** Envoy's default number of draws for least_request (Consul leaves ChoiceCount 0 then). */
export const DEFAULT_CHOICE_COUNT = 2;
const POLICIES: ReadonlySet<string> = new Set(['', 'round_robin', 'least_request', 'random', 'ring_hash', 'maglev']);
const HASH_FIELDS: ReadonlySet<string> = new Set(['header', 'cookie', 'query_parameter']);

type NodeJson = DiscoveryChainJson['Nodes'][string];
type TargetJson = DiscoveryChainJson['Targets'][string];

function invalid(upstream: string, message: string): HaproxyConnectError {
  return new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `discovery chain of upstream ${upstream}: ${message}`);
}

function loadBalancerOf(upstream: string, node: NodeJson): LoadBalancer | undefined {
  const lb = node.LoadBalancer;
  if (lb === undefined || lb === null) return undefined;
  if (!POLICIES.has(lb.Policy)) throw invalid(upstream, `LoadBalancer.Policy ${JSON.stringify(lb.Policy)} is not one of round_robin, least_request, random, ring_hash, maglev`);
  if (lb.Policy === '') return undefined;
  const hashPolicies: HashPolicy[] = [];
  for (const [i, p] of lb.HashPolicies.entries()) {
    const terminal = p.Terminal === true;
    if (p.SourceIP === true) hashPolicies.push({ source: { kind: 'source_ip' }, terminal });
    else if (HASH_FIELDS.has(p.Field) && p.FieldValue !== '') {
      hashPolicies.push({ source: { kind: p.Field as 'header' | 'cookie' | 'query_parameter', name: p.FieldValue }, terminal });
    } else throw invalid(upstream, `LoadBalancer.HashPolicies[${i}] has Field ${JSON.stringify(p.Field)} and FieldValue ${JSON.stringify(p.FieldValue)}`);
  }
  const choiceCount = lb.LeastRequestConfig?.ChoiceCount ?? 0;
  return { policy: lb.Policy as LoadBalancer['policy'], choiceCount: choiceCount > 0 ? choiceCount : DEFAULT_CHOICE_COUNT, hashPolicies };
}

function targetOf(upstream: string, json: TargetJson, fallbackTimeoutMs: number | undefined): Target {
  const timeout = json.ConnectTimeout === undefined || json.ConnectTimeout === null ? fallbackTimeoutMs : parseDurationMs(json.ConnectTimeout);
  if (timeout === undefined && json.ConnectTimeout !== undefined && json.ConnectTimeout !== null) {
    throw invalid(upstream, `target ${json.ID} has ConnectTimeout ${JSON.stringify(json.ConnectTimeout)}, which is not a duration`);
  }
  return {
    id: json.ID,
    kind: 'service',
    service: json.Service,
    namespace: json.Namespace === '' ? DEFAULT_NAMESPACE : json.Namespace,
    partition: json.Partition === '' ? DEFAULT_PARTITION : json.Partition,
    datacenter: json.Datacenter,
    filter: json.Subset?.Filter ?? '',
    onlyPassing: json.Subset?.OnlyPassing === true,
    ...(timeout !== undefined && { connectTimeoutMs: Math.round(timeout) }),
    meshGatewayMode: json.MeshGateway?.Mode ?? '',
  };
}

/** Why a target cannot be used from here, or undefined. */
function targetProblem(json: TargetJson, localDatacenter: string): string | undefined {
  if (json.Peer !== '') return `target ${json.ID} is on cluster peer ${JSON.stringify(json.Peer)}: peering is not supported`;
  const mode = json.MeshGateway?.Mode ?? '';
  if (json.Datacenter !== '' && json.Datacenter !== localDatacenter && (mode === 'local' || mode === 'remote')) {
    return `target ${json.ID} in datacenter ${json.Datacenter} goes through a mesh gateway (mode ${mode}), which needs SNI that HAProxy 2.6 cannot combine with verifying Consul certificates; set the mesh gateway mode to none to dial its sidecars directly`;
  }
  return undefined;
}

/**
 * The chain Consul answered for `query`; one that cannot be used (chainFromCompiled throws) comes
 * back with `invalid` set, so the watch takes the answer (its index moves on, no retry of the same
 * chain) and the consumer refuses it once, keeping the upstream's last good chain.
 */
export function readChain(query: { upstream: string; localDatacenter: string }, chain: DiscoveryChainJson): Chain {
  try {
    return chainFromCompiled(query.upstream, chain, query.localDatacenter);
  } catch (err) {
    if (!isHaproxyConnectError(err, 'CONSUL_RESPONSE_INVALID')) throw err;
    return { targets: [], invalid: err.message };
  }
}

/**
 * The upstream's Chain from Consul's compiled chain. `upstream` names the upstream in errors;
 * `localDatacenter` tells which targets are remote. An HTTP chain (Consul compiled it for the
 * upstream's protocol) also gets its routes (chain-routes.ts); a TCP chain starts at a resolver.
 */
export function chainFromCompiled(upstream: string, chain: DiscoveryChainJson, localDatacenter: string): Chain {
  const start = chain.Nodes[chain.StartNode];
  if (start === undefined) throw invalid(upstream, `StartNode ${JSON.stringify(chain.StartNode)} is not among its nodes`);
  const http = chain.Protocol === 'http' || chain.Protocol === 'http2' || chain.Protocol === 'grpc';
  if (!http && (start.Type !== 'resolver' || start.Resolver === undefined || start.Resolver === null)) {
    throw invalid(upstream, `a ${chain.Protocol || 'tcp'} chain starts at a ${start.Type} node (${chain.StartNode})`);
  }
  const targets = new Map<string, Target>();
  const refused: string[] = [];
  const resolver = (key: string): ResolvedNode => {
    const node = chain.Nodes[key];
    if (node?.Resolver === undefined || node.Resolver === null) throw invalid(upstream, `node ${JSON.stringify(key)} is not a resolver`);
    const timeout = node.Resolver.ConnectTimeout === undefined || node.Resolver.ConnectTimeout === null ? undefined : parseDurationMs(node.Resolver.ConnectTimeout);
    const usable: string[] = [];
    for (const id of [...new Set([node.Resolver.Target, ...(node.Resolver.Failover?.Targets ?? [])])]) {
      const json = chain.Targets[id];
      if (json === undefined) throw invalid(upstream, `names target ${JSON.stringify(id)} but does not define it`);
      const problem = targetProblem(json, localDatacenter);
      if (problem !== undefined) {
        if (!refused.includes(problem)) refused.push(problem);
        continue;
      }
      if (!targets.has(id)) targets.set(id, targetOf(upstream, json, timeout));
      usable.push(id);
    }
    return { targets: usable, loadBalancer: loadBalancerOf(upstream, node) };
  };
  const routes = http ? routesOf({ upstream, chain, resolver, refused }, (node) => loadBalancerOf(upstream, node)) : undefined;
  const loadBalancer = start.Type === 'resolver' ? resolver(chain.StartNode).loadBalancer : undefined;
  return {
    targets: [...targets.values()],
    ...(loadBalancer !== undefined && { loadBalancer }),
    ...(refused.length > 0 && { refused }),
    ...(routes !== undefined && { routes }),
  };
}
