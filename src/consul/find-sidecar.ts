/**
 * Finds the connect-proxy registration a sidecar serves: the proxy whose
 * Proxy.DestinationServiceID is the -sidecar-for service ID, narrowed by -sidecar-for-tag.
 */
import { HaproxyConnectError } from '../errors.js';
import type { ConsulAgentApi, ProxyServiceSummary } from './api.js';

export interface SidecarSelector {
  serviceId: string | undefined;
  tag: string | undefined;
}

export function selectSidecar(proxies: readonly ProxyServiceSummary[], selector: SidecarSelector, agentAddress: string): ProxyServiceSummary {
  const matches = proxies
    .filter((p) => selector.serviceId === undefined || p.destinationServiceId === selector.serviceId)
    .filter((p) => selector.tag === undefined || p.tags.includes(selector.tag))
    .sort((a, b) => a.id.localeCompare(b.id));
  const wanted = [selector.serviceId !== undefined ? `service '${selector.serviceId}'` : undefined, selector.tag !== undefined ? `tag '${selector.tag}'` : undefined]
    .filter((x) => x !== undefined)
    .join(' with ');
  const [only, ...others] = matches;
  if (only === undefined) {
    throw new HaproxyConnectError('SIDECAR_NOT_FOUND', `Cannot start sidecar: ${wanted} has no connect-proxy registered on agent ${agentAddress}`);
  }
  if (others.length > 0) {
    throw new HaproxyConnectError(
      'SIDECAR_AMBIGUOUS',
      `Cannot start sidecar: ${wanted} matches several connect-proxy registrations on agent ${agentAddress} (${matches.map((m) => `'${m.id}'`).join(', ')}); use -sidecar-for-tag to pick one`,
    );
  }
  return only;
}

export async function findSidecar(api: ConsulAgentApi, selector: SidecarSelector, signal: AbortSignal): Promise<ProxyServiceSummary> {
  return selectSidecar(await api.listProxyServices(signal), selector, api.address);
}
