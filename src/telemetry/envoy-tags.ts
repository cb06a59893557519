/**
 * The labels an Envoy sidecar bootstrapped by `consul connect envoy` (Consul 1.16.2) puts on its
 * stats, computed for our HAProxy proxies. PURE.
 *
 * Envoy names a stat by a dotted path (`cluster.api.default.dc1.internal.<td>.consul.upstream_rq_5xx`,
 * `http.upstream.api.default.default.dc1.downstream_rq_2xx`) and turns parts of it into labels with
 * tag extractors: Consul's own (command/connect/envoy/bootstrap_config.go, resourceTagSpecifiers and
 * generateStatsTags, copied below rule for rule), then Envoy's defaults. For each rule the inner
 * capture group is the value; a group that did not take part gives no label (Prometheus drops an
 * empty label anyway). Applying the same rules to the same stat names gives the same labels Envoy
 * would give in the same situation; the names come from the registration and the discovery chain,
 * never from request data, so the label sets are bounded.
 */
import { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from '../domain/consul.js';
import { LOCAL_APP_BACKEND_NAME, PUBLIC_FRONTEND_NAME, fnv1a32Hex, upstreamBackendName, upstreamFrontendName } from '../domain/haproxy-names.js';
import type { Snapshot, Target, Upstream } from '../domain/snapshot.js';

export type Labels = Readonly<Record<string, string>>;

const SEG = '[^.]+';

/** Consul 1.16.2's resource tag rules (tag name with dots, regex): the current ones, then the deprecated ones it still sets by default. */
export const CONSUL_TAG_RULES: ReadonlyArray<readonly [string, string]> = [
  ['consul.destination.custom_hash', `^cluster\\.(?:passthrough~)?((?:(${SEG})~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.destination.service_subset', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:(${SEG})\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.destination.service', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?(${SEG})\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.destination.namespace', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.(${SEG})\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.destination.partition', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:(${SEG})\\.)?${SEG}\\.internal[^.]*\\.${SEG}\\.consul\\.)`],
  ['consul.destination.datacenter', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?(${SEG})\\.internal[^.]*\\.${SEG}\\.consul\\.)`],
  ['consul.destination.peer', `^cluster\\.(${SEG}\\.(?:${SEG}\\.)?(${SEG})\\.external\\.${SEG}\\.consul\\.)`],
  ['consul.destination.routing_type', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.(${SEG})\\.${SEG}\\.consul\\.)`],
  ['consul.destination.trust_domain', `^cluster\\.(?:passthrough~)?((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(${SEG})\\.consul\\.)`],
  ['consul.destination.target', `^cluster\\.(?:passthrough~)?(((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG})\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.destination.full_target', `^cluster\\.(?:passthrough~)?(((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG})\\.consul\\.)`],
  ['consul.upstream.service', `^(?:tcp|http)\\.upstream(?:_peered)?\\.((${SEG})(?:\\.${SEG})?(?:\\.${SEG})?\\.${SEG}\\.)`],
  ['consul.upstream.datacenter', `^(?:tcp|http)\\.upstream\\.(${SEG}(?:\\.${SEG})?(?:\\.${SEG})?\\.(${SEG})\\.)`],
  ['consul.upstream.peer', `^(?:tcp|http)\\.upstream_peered\\.(${SEG}(?:\\.${SEG})?\\.(${SEG})\\.)`],
  ['consul.upstream.namespace', `^(?:tcp|http)\\.upstream(?:_peered)?\\.(${SEG}(?:\\.(${SEG}))?(?:\\.${SEG})?\\.${SEG}\\.)`],
  ['consul.upstream.partition', `^(?:tcp|http)\\.upstream\\.(${SEG}(?:\\.${SEG})?(?:\\.(${SEG}))?\\.${SEG}\\.)`],
  // Deprecated in Consul 1.9 and still on by default (-omit-deprecated-tags=false).
  ['consul.custom_hash', `^cluster\\.((?:(${SEG})~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.service_subset', `^cluster\\.((?:${SEG}~)?(?:(${SEG})\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.service', `^cluster\\.((?:${SEG}~)?(?:${SEG}\\.)?(${SEG})\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.namespace', `^cluster\\.((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.(${SEG})\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.datacenter', `^cluster\\.((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?(${SEG})\\.internal[^.]*\\.${SEG}\\.consul\\.)`],
  ['consul.routing_type', `^cluster\\.((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.(${SEG})\\.${SEG}\\.consul\\.)`],
  ['consul.trust_domain', `^cluster\\.((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(${SEG})\\.consul\\.)`],
  ['consul.target', `^cluster\\.(((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG})\\.${SEG}\\.${SEG}\\.consul\\.)`],
  ['consul.full_target', `^cluster\\.(((?:${SEG}~)?(?:${SEG}\\.)?${SEG}\\.${SEG}\\.(?:${SEG}\\.)?${SEG}\\.${SEG}\\.${SEG})\\.consul\\.)`],
];

/** Envoy's default extractors for the parts the Consul UI reads (well-known tag names). */
const ENVOY_TAG_RULES: ReadonlyArray<readonly [string, string]> = [
  ['envoy.cluster_name', '^cluster\\.((.+?)\\.)'],
  ['envoy.http_conn_manager_prefix', '^http\\.((.*?)\\.)'],
  ['envoy.tcp_prefix', '^tcp\\.((.*?)\\.)\\w+?$'],
];

const COMPILED: ReadonlyArray<readonly [string, RegExp]> = [...CONSUL_TAG_RULES, ...ENVOY_TAG_RULES].map(([name, re]) => [name.replaceAll('.', '_'), new RegExp(re)] as const);

/** The labels the resource tag extractors give a stat (`cluster.<name>.<stat>`, `http.<prefix>.<stat>`, `tcp.<prefix>.<stat>`). */
export function resourceTags(statName: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [name, re] of COMPILED) {
    if (name in labels) continue;
    const value = re.exec(statName)?.[2];
    if (value !== undefined && value !== '') labels[name] = value;
  }
  return labels;
}

/** Consul's fixed tags on every stat of a sidecar (generateStatsTags' defaults). */
export function sourceTags(snapshot: Snapshot): Labels {
  const reg = snapshot.registration;
  return {
    local_cluster: reg.serviceName,
    consul_source_service: reg.serviceName,
    consul_source_namespace: reg.namespace || DEFAULT_NAMESPACE,
    consul_source_partition: reg.partition || DEFAULT_PARTITION,
    consul_source_datacenter: snapshot.datacenter,
  };
}

/** connect.ServiceSNI: the Envoy cluster name of a service target. */
export function serviceSni(service: string, subset: string, namespace: string, partition: string, datacenter: string, trustDomain: string): string {
  const ns = namespace || DEFAULT_NAMESPACE;
  const ap = partition || DEFAULT_PARTITION;
  const head = subset === '' ? [service, ns] : [subset, service, ns];
  return ap === DEFAULT_PARTITION ? [...head, datacenter, 'internal', trustDomain].join('.') : [...head, ap, datacenter, 'internal-v1', trustDomain].join('.');
}

/** connect.QuerySNI: the Envoy cluster name of a prepared query upstream. */
export function querySni(name: string, datacenter: string, trustDomain: string): string {
  return [name, DEFAULT_NAMESPACE, datacenter, 'query', trustDomain].join('.');
}

/** A discovery-chain target id is `[<subset>.]<service>.<namespace>.<partition>.<datacenter>`. */
function subsetOf(target: Target): string {
  const tail = `.${target.service}.${target.namespace}.${target.partition}.${target.datacenter}`;
  return target.id.endsWith(tail) ? target.id.slice(0, -tail.length) : '';
}

export function targetClusterName(target: Target, trustDomain: string): string {
  if (target.kind === 'prepared_query') return querySni(target.service, target.datacenter, trustDomain);
  return serviceSni(target.service, subsetOf(target), target.namespace, target.partition, target.datacenter, trustDomain);
}

/** The HCM / tcp_proxy stat prefix of an explicit upstream's listener (agent/xds/listeners.go, makeStatPrefix). */
export function upstreamStatPrefix(upstream: Upstream, snapshot: Snapshot): string {
  const dc = upstream.datacenter || snapshot.datacenter;
  if (upstream.destinationType === 'prepared_query') {
    // filterName is the upstream's EnvoyID (`prepared_query:<name>[?dc=<dc>]`), colons replaced.
    const id = `prepared_query:${upstream.destinationName}${upstream.datacenter === '' ? '' : `?dc=${upstream.datacenter}`}`;
    return `upstream.${id.replaceAll(':', '_')}`;
  }
  const ns = upstream.destinationNamespace || DEFAULT_NAMESPACE;
  const ap = snapshot.registration.partition || DEFAULT_PARTITION;
  return `upstream.${upstream.destinationName}.${ns}.${ap}.${dc}`;
}

export type ListenerKind = 'http' | 'tcp';

export interface EnvoyListener {
  kind: ListenerKind;
  /** The HCM or tcp_proxy stat prefix (`public_listener`, `upstream.<svc>.<ns>.<ap>.<dc>`). */
  statPrefix: string;
  /** Envoy's listener address tag (`0.0.0.0_21000`); only the public listener gets `listener.*` series here. */
  listenerAddress?: string;
  /** Resource tags of this listener's stats (without the source tags). */
  labels: Labels;
}

export interface EnvoyCluster {
  name: string;
  kind: ListenerKind;
  labels: Labels;
}

/** What each HAProxy proxy is in Envoy's terms, for one snapshot. */
export interface EnvoyView {
  source: Labels;
  /** By HAProxy frontend name. */
  listeners: ReadonlyMap<string, EnvoyListener>;
  /** By HAProxy backend name. */
  clusters: ReadonlyMap<string, EnvoyCluster>;
  /** By an upstream's base backend name: its other backends (route variants, empty legs). */
  upstreamFallbacks: ReadonlyMap<string, EnvoyCluster>;
}

function listenerAddress(address: string, port: number): string {
  return address.includes(':') ? `[${address}]_${port}` : `${address}_${port}`;
}

function kindOf(protocol: string): ListenerKind {
  return protocol === 'tcp' ? 'tcp' : 'http';
}

function listenerLabels(kind: ListenerKind, statPrefix: string): Labels {
  // The stat name shape decides which extractors match: `<http|tcp>.<prefix>.<stat>`.
  return resourceTags(`${kind}.${statPrefix}.${kind === 'http' ? 'downstream_rq_completed' : 'downstream_cx_total'}`);
}

function clusterOf(name: string, kind: ListenerKind): EnvoyCluster {
  return { name, kind, labels: resourceTags(`cluster.${name}.upstream_rq_completed`) };
}

/**
 * The Envoy view of a snapshot. An upstream's backends: the chain's first target keeps the
 * upstream's backend name; other targets' backends are `<base>_<hash of the target id>`; any other
 * backend of the upstream (a route variant, an empty leg) counts for the upstream's destination.
 */
export function envoyView(snapshot: Snapshot): EnvoyView {
  const reg = snapshot.registration;
  const td = snapshot.roots.trustDomain;
  const listeners = new Map<string, EnvoyListener>();
  const clusters = new Map<string, EnvoyCluster>();
  const upstreamFallbacks = new Map<string, EnvoyCluster>();
  const publicKind = kindOf(reg.publicListener.protocol);
  listeners.set(PUBLIC_FRONTEND_NAME, {
    kind: publicKind,
    statPrefix: PUBLIC_FRONTEND_NAME,
    listenerAddress: listenerAddress(reg.publicListener.bindAddress, reg.publicListener.bindPort),
    labels: listenerLabels(publicKind, PUBLIC_FRONTEND_NAME),
  });
  clusters.set(LOCAL_APP_BACKEND_NAME, clusterOf(LOCAL_APP_BACKEND_NAME, publicKind));
  for (const upstream of reg.upstreams) {
    const kind = kindOf(upstream.protocol);
    const statPrefix = upstreamStatPrefix(upstream, snapshot);
    listeners.set(upstreamFrontendName(upstream.key), { kind, statPrefix, labels: listenerLabels(kind, statPrefix) });
    const base = upstreamBackendName(upstream.key);
    const targets = snapshot.chains.get(upstream.key)?.targets ?? [];
    const primary = targets[0] ?? destinationTarget(upstream, snapshot);
    clusters.set(base, clusterOf(targetClusterName(primary, td), kind));
    for (const target of targets.slice(1)) clusters.set(`${base}_${fnv1a32Hex(target.id)}`, clusterOf(targetClusterName(target, td), kind));
    upstreamFallbacks.set(base, clusterOf(targetClusterName(destinationTarget(upstream, snapshot), td), kind));
  }
  return { source: sourceTags(snapshot), listeners, clusters, upstreamFallbacks };
}

function destinationTarget(upstream: Upstream, snapshot: Snapshot): Target {
  const datacenter = upstream.datacenter || snapshot.datacenter;
  const namespace = upstream.destinationNamespace || DEFAULT_NAMESPACE;
  const partition = snapshot.registration.partition || DEFAULT_PARTITION;
  return {
    id: `${upstream.destinationName}.${namespace}.${partition}.${datacenter}`,
    kind: upstream.destinationType,
    service: upstream.destinationName,
    namespace,
    partition,
    datacenter,
  };
}

/** The cluster a backend stands for, or undefined for backends that are no Envoy cluster (stats, SPOE). */
export function clusterOfBackend(view: EnvoyView, backend: string): EnvoyCluster | undefined {
  const exact = view.clusters.get(backend);
  if (exact !== undefined) return exact;
  const cut = backend.lastIndexOf('_');
  return cut > 0 ? view.upstreamFallbacks.get(backend.slice(0, cut)) : undefined;
}
