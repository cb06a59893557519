/**
 * Certificates for tests: a leaf from a CA that is not Consul's (made with the openssl CLI, for
 * refusal tests), and a rotation of Consul's own CA.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConsulDevAgent } from './consul-dev-agent.js';
import { waitFor } from './ports.js';

export interface KeyPair {
  certPem: string;
  keyPem: string;
}

/** A leaf that looks like a Consul leaf for `service` (SPIFFE URI SAN), signed by a foreign CA. */
export function foreignLeaf(service: string, trustDomain = '11111111-2222-3333-4444-555555555555.consul'): KeyPair {
  const dir = mkdtempSync(join(tmpdir(), 'foreign-ca-'));
  try {
    const run = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    run('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
    run('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=Foreign CA', '-days', '2', '-out', 'ca.pem');
    run('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'leaf.key');
    run('req', '-new', '-key', 'leaf.key', '-subj', '/', '-out', 'leaf.csr');
    writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=URI:spiffe://${trustDomain}/ns/default/dc/dc1/svc/${service}\n`);
    run('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'ext.cnf', '-out', 'leaf.pem');
    return { certPem: readFileSync(join(dir, 'leaf.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What a Consul CA rotation left: the new active root and every root now trusted (PEM bundle). */
export interface RotatedCa {
  activeRoot: X509Certificate;
  allRoots: string;
}

/**
 * Rotates the Connect CA of `agent` to a new built-in CA (a fresh P-256 key): Consul adds the new
 * root (cross-signed by the old one) and re-issues every leaf. Resolves when the agent reports the
 * new active root.
 */
export async function rotateConnectCa(agent: ConsulDevAgent, timeoutMs = 30_000): Promise<RotatedCa> {
  type RootsAnswer = { ActiveRootID: string; Roots: Array<{ ID: string; RootCert: string }> };
  const before = await agent.get<RootsAnswer>('/v1/agent/connect/ca/roots');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  await agent.put('/v1/connect/ca/configuration', { Provider: 'consul', Config: { PrivateKey: privateKey, LeafCertTTL: '72h' } });
  const after = await waitFor(
    'a new active root',
    async () => {
      const r = await agent.get<RootsAnswer>('/v1/agent/connect/ca/roots');
      return r.ActiveRootID !== before.ActiveRootID ? r : undefined;
    },
    timeoutMs,
  );
  const active = after.Roots.find((r) => r.ID === after.ActiveRootID);
  if (active === undefined) throw new Error(`active root ${after.ActiveRootID} is not among the roots`);
  return { activeRoot: new X509Certificate(active.RootCert), allRoots: after.Roots.map((r) => r.RootCert).join('\n') };
}
