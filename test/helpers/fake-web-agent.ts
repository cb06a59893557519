/**
 * An in-process fake Consul agent with the `web` sidecar of the fixtures registered on loopback
 * (public listener and one `api` upstream on free ports), and the Config that runs it.
 */
import { freePorts } from '../../devtools/ports.js';
import type { Config } from '../../src/config/config.js';
import type { UpstreamQuery } from '../../src/consul/api.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import type { Endpoint, ProxyRegistration } from '../../src/domain/snapshot.js';
import { roots, snapshot, upstream, webLeaf } from './fixtures.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

/** The upstream query of the `api` upstream. */
export const API: UpstreamQuery = { destinationName: 'api', destinationNamespace: 'default', datacenter: '' };

export async function fakeWebAgent(apiEndpoints: Endpoint[]): Promise<FakeConsulAgentApi> {
  const [publicPort, upstreamPort] = (await freePorts(2)) as [number, number];
  const snap = snapshot({ listener: { bindAddress: '127.0.0.1', bindPort: publicPort }, upstreams: [upstream('api', { localBindPort: upstreamPort })] });
  const consul = new FakeConsulAgentApi();
  consul.setProxyServices([{ id: 'web-sidecar-proxy', name: 'web-sidecar-proxy', tags: [], destinationServiceId: 'web', destinationServiceName: 'web' }]);
  consul.setRegistration(snap.registration as ProxyRegistration);
  consul.setLeaf('web', webLeaf());
  consul.setRoots(roots());
  consul.setEndpoints(API, apiEndpoints);
  return consul;
}

/** The Config of a sidecar for `web` against `consul`, with its run directory under `cfgBasePath`. */
export function webSidecarConfig(consul: FakeConsulAgentApi, cfgBasePath: string, overrides: Partial<Config> = {}): Config {
  return {
    sidecarFor: 'web',
    sidecarForTag: undefined,
    consul: { address: consul.address, token: undefined, tls: undefined },
    haproxyBin: HAPROXY_BIN,
    cfgBasePath,
    logLevel: 'debug',
    enforceIntentions: false,
    shutdownGraceMs: 10_000,
    ...overrides,
  };
}
