/**
 * Snapshot fixtures with real certificates (test/golden/certs, see its README): ECDSA P-256 like
 * Consul's built-in CA, leaves without CN and with one SPIFFE URI SAN.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { IntentionSet } from '../../src/domain/intentions.js';
import { trivialChain } from '../../src/domain/chain.js';
import type { AccessLogs, Endpoint, Leaf, MeshConfig, PublicListener, Roots, Snapshot, Upstream } from '../../src/domain/snapshot.js';

export const CERTS_DIR = fileURLToPath(new URL('../golden/certs/', import.meta.url));
export const TRUST_DOMAIN = '11111111-2222-3333-4444-555555555555.consul';

function readCert(name: string): string {
  return readFileSync(`${CERTS_DIR}${name}`, 'utf8');
}

/** PEMs of the test PKI: `ca` is the active root, `ca2` a previous one. */
export const PEM = {
  ca: readCert('ca.pem'),
  ca2: readCert('ca2.pem'),
  webCert: readCert('web.pem'),
  webKey: readCert('web.key'),
  apiCert: readCert('api.pem'),
  apiKey: readCert('api.key'),
  /** Expired on 2020-01-02 (with its key). */
  expiredCert: readCert('expired.pem'),
  expiredKey: readCert('expired.key'),
} as const;

export const ACTIVE_ROOT_ID = 'aa:bb:cc:07';
export const PREVIOUS_ROOT_ID = 'aa:bb:cc:06';

export function webLeaf(overrides: Partial<Leaf> = {}): Leaf {
  return {
    certPem: PEM.webCert,
    privateKeyPem: PEM.webKey,
    serialNumber: '7b:65:8f:b5',
    validBefore: '2125-01-01T00:00:00Z',
    modifyIndex: 42,
    ...overrides,
  };
}

export function roots(overrides: Partial<Roots> = {}): Roots {
  return {
    trustDomain: TRUST_DOMAIN,
    activeRootId: ACTIVE_ROOT_ID,
    roots: [{ id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [], active: true }],
    ...overrides,
  };
}

export function publicListener(overrides: Partial<PublicListener> = {}): PublicListener {
  return {
    bindAddress: '0.0.0.0',
    bindPort: 21000,
    protocol: 'tcp',
    localServiceAddress: '127.0.0.1',
    localServicePort: 8080,
    localConnectTimeoutMs: 5000,
    localRequestTimeoutMs: undefined,
    ...overrides,
  };
}

/** An upstream of the service `name`; the key follows types.ts: `service:<ns>/<name>@<dc>`. */
export function upstream(name: string, overrides: Partial<Upstream> = {}): Upstream {
  const destinationNamespace = overrides.destinationNamespace ?? 'default';
  const datacenter = overrides.datacenter ?? '';
  const destinationType = overrides.destinationType ?? 'service';
  return {
    key: `${destinationType}:${destinationNamespace}/${name}@${datacenter}`,
    destinationType,
    destinationName: name,
    destinationNamespace,
    datacenter,
    localBindAddress: '127.0.0.1',
    localBindPort: 9191,
    localBindSocketPath: undefined,
    localBindSocketMode: undefined,
    protocol: 'tcp',
    connectTimeoutMs: 5000,
    ...overrides,
  };
}

export function endpoint(node: string, address: string, port = 21000, weight = 1, proxyId = 'api-sidecar-proxy'): Endpoint {
  return { id: `${node}/${proxyId}`, node, address, port, weight };
}

export interface SnapshotParts {
  listener?: Partial<PublicListener>;
  upstreams?: Upstream[];
  endpoints?: Array<[string, Endpoint[]]>;
  roots?: Roots;
  leaf?: Leaf;
  /** Enforced intentions; absent = not enforced. */
  intentions?: IntentionSet;
  /** Proxy.AccessLogs; absent = none. */
  accessLogs?: AccessLogs;
  /** The mesh config entry; absent = Consul's defaults (no entry). */
  mesh?: MeshConfig;
}

/**
 * The `web` sidecar on node-1 in dc1. `endpoints` are given per upstream key and land on the
 * target of that upstream's (trivial) chain.
 */
export function snapshot(parts: SnapshotParts = {}): Snapshot {
  const upstreams = parts.upstreams ?? [];
  const chains = new Map(upstreams.map((u) => [u.key, trivialChain(u, 'dc1')]));
  const targetOf = (key: string): string => chains.get(key)?.targets[0]?.id ?? `unregistered:${key}`;
  return {
    datacenter: 'dc1',
    registration: {
      proxyId: 'web-sidecar-proxy',
      proxyName: 'web-sidecar-proxy',
      serviceName: 'web',
      serviceId: 'web',
      namespace: 'default',
      partition: 'default',
      publicListener: publicListener(parts.listener),
      upstreams: parts.upstreams ?? [],
      ...(parts.accessLogs !== undefined && { accessLogs: parts.accessLogs }),
    },
    leaf: parts.leaf ?? webLeaf(),
    roots: parts.roots ?? roots(),
    chains,
    targets: new Map((parts.endpoints ?? []).map(([key, endpoints]) => [targetOf(key), endpoints])),
    intentions: parts.intentions,
    mesh: parts.mesh ?? { sanitizeXForwardedClientCert: false },
  };
}
