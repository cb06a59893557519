/** Certificates from a CA that is not Consul's, made with the openssl CLI, for refusal tests. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
