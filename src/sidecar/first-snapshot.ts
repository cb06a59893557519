/**
 * Everything read once before anything starts: the HAProxy release, the agent, the proxy to serve,
 * and the first registration, leaf, roots and intentions. What cannot work (a bad proxy config, a
 * token without the rights to the leaf or the intentions) stops the start with a clear error
 * instead of retrying forever.
 */
import type { Config } from '../config/config.js';
import type { ConsulAgentApi } from '../consul/api.js';
import { findSidecar } from '../consul/find-sidecar.js';
import type { IntentionSet } from '../domain/intentions.js';
import type { Leaf, ProxyRegistration, Roots } from '../domain/snapshot.js';
import { haproxyVersion } from '../driver/check.js';
import { HaproxyConnectError, isHaproxyConnectError } from '../errors.js';
import type { Logger } from '../logger.js';
import { VERSION } from '../version.js';

/**
 * Each watch is one HTTP connection to the agent (a blocking query), and Consul's agent allows 200
 * per client address by default (limits.http_max_conns_per_client; measured on 1.16.2: the 199th
 * and later concurrent requests were answered 429). Warn well before that.
 */
const AGENT_CONNECTIONS_WARNING = 150;

export interface FirstSnapshot {
  haproxyRelease: string;
  datacenter: string;
  proxyId: string;
  serviceName: string;
  registration: ProxyRegistration;
  leaf: Leaf;
  roots: Roots;
  /** Absent when intentions are not enforced. */
  intentions: IntentionSet | undefined;
}

export async function readFirstSnapshot(config: Config, consul: ConsulAgentApi, signal: AbortSignal, log: { main: Logger; consul: Logger }): Promise<FirstSnapshot> {
  const haproxyRelease = await haproxyVersion(config.haproxyBin);
  const agent = await consul.agentSelf(signal);
  const proxy = await findSidecar(consul, { serviceId: config.sidecarFor, tag: config.sidecarForTag }, signal);
  log.main.info(
    { version: VERSION, haproxy: haproxyRelease, consul: consul.address, datacenter: agent.datacenter, node: agent.nodeName, proxyId: proxy.id, service: proxy.destinationServiceName },
    'starting sidecar',
  );
  const enforce = config.enforceIntentions;
  const registration = (await consul.proxyRegistration(proxy.id, {}, signal)).value;
  // A chain per service upstream and at least one target per upstream (more with subsets and failover).
  const chains = registration.upstreams.filter((u) => u.destinationType === 'service').length;
  // Registration, leaf, roots, intentions when enforced, and the mesh entry on an http or http2 listener.
  const meshWatch = ['http', 'http2'].includes(registration.publicListener.protocol) ? 1 : 0;
  const blockingQueries = chains + registration.upstreams.length + (enforce ? 4 : 3) + meshWatch;
  if (blockingQueries > AGENT_CONNECTIONS_WARNING) {
    log.consul.warn(
      { blockingQueries, upstreams: registration.upstreams.length },
      `this sidecar holds at least ${blockingQueries} blocking queries on the agent; the agent allows limits.http_max_conns_per_client (default 200) connections per client address, shared by every sidecar on the node: raise it, or watches answered 429 keep retrying`,
    );
  }
  const [leaf, roots, intentions] = await Promise.all([
    consul.leaf(registration.serviceName, {}, signal),
    consul.roots({}, signal),
    enforce ? firstIntentions(consul, registration, signal) : undefined,
  ]);
  return {
    haproxyRelease,
    datacenter: agent.datacenter,
    proxyId: proxy.id,
    serviceName: proxy.destinationServiceName,
    registration,
    leaf: leaf.value,
    roots: roots.value,
    intentions,
  };
}

/** A token that cannot read the intentions is a start error that says which right it needs. */
async function firstIntentions(consul: ConsulAgentApi, registration: ProxyRegistration, signal: AbortSignal): Promise<IntentionSet> {
  try {
    return (await consul.intentionsMatch({ name: registration.serviceName, namespace: registration.namespace }, {}, signal)).value;
  } catch (err) {
    if (!isHaproxyConnectError(err, 'CONSUL_FORBIDDEN')) throw err;
    throw new HaproxyConnectError(
      'CONSUL_FORBIDDEN',
      `Cannot read the intentions of service '${registration.serviceName}' on agent ${consul.address}: the ACL token was refused (it needs intentions:read on the service, e.g. service:read); -enable-intentions=false opts out of enforcement`,
      { cause: err },
    );
  }
}
