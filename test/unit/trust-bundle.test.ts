/**
 * The trust bundle leaves out a root that a kept root cross-signed (Consul's CA rotation), so a
 * rotation changes only the leaf. Certificates made with the openssl CLI.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CaRoot } from '../../src/domain/snapshot.js';
import { trustedRoots } from '../../src/translate/trust-bundle.js';

let dir: string;
const pem: Record<string, string> = {};
const DAY_MS = 86_400_000;
const inDays = (days: number): string => new Date(Date.now() + days * DAY_MS).toISOString();

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A self-signed CA `name` with its key in `<name>.key`. */
function ca(name: string): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-subj',
    `/CN=${name}`,
    '-days',
    '3650',
    '-addext',
    'basicConstraints=critical,CA:true',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    `${name}.pem`,
  );
  pem[name] = readFileSync(join(dir, `${name}.pem`), 'utf8');
}

/** `subject`'s key and name certified by `issuer` for `days`: a cross-signature. */
function crossSign(out: string, subject: string, issuer: string, days: number): void {
  openssl('x509', '-x509toreq', '-in', `${subject}.pem`, '-signkey', `${subject}.key`, '-out', `${out}.csr`);
  writeFileSync(join(dir, 'ca.ext'), 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n');
  openssl('x509', '-req', '-in', `${out}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`, '-CAcreateserial', '-days', String(days), '-extfile', 'ca.ext', '-out', `${out}.pem`);
  pem[out] = readFileSync(join(dir, `${out}.pem`), 'utf8');
}

const root = (id: string, intermediates: string[] = []): CaRoot => ({ id, rootCertPem: pem[id] as string, intermediateCertsPem: intermediates.map((n) => pem[n] as string), active: false });
const ids = (roots: CaRoot[]): string[] => roots.map((r) => r.id).sort();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'trust-bundle-'));
  ca('old');
  ca('new');
  ca('other');
  crossSign('new-by-old', 'new', 'old', 7);
  crossSign('old-by-new', 'old', 'new', 7);
  // A certificate for `other`'s key signed by `old`: an intermediate, but not of `new`.
  crossSign('other-by-old', 'other', 'old', 7);
  // `old`'s name on a certificate signed by a stranger's key: the name matches, the signature does not.
  ca('impostor');
  openssl('req', '-x509', '-new', '-key', 'impostor.key', '-subj', '/CN=old', '-days', '30', '-addext', 'basicConstraints=critical,CA:true', '-out', 'fake-old.pem');
  pem['fake-old'] = readFileSync(join(dir, 'fake-old.pem'), 'utf8');
  openssl('x509', '-x509toreq', '-in', 'new.pem', '-signkey', 'new.key', '-out', 'n2.csr');
  openssl('x509', '-req', '-in', 'n2.csr', '-CA', 'fake-old.pem', '-CAkey', 'impostor.key', '-CAcreateserial', '-days', '7', '-extfile', 'ca.ext', '-out', 'new-by-fake-old.pem');
  pem['new-by-fake-old'] = readFileSync(join(dir, 'new-by-fake-old.pem'), 'utf8');
});

after(() => rmSync(dir, { recursive: true, force: true }));

describe('trusted roots', () => {
  const cases: Array<{ name: string; roots: () => CaRoot[]; leafDays: number; want: string[] }> = [
    { name: 'a single root is trusted', roots: () => [root('old')], leafDays: 3, want: ['old'] },
    { name: 'a new root cross-signed by the old one is bridged: only the old root', roots: () => [root('old'), root('new', ['new-by-old'])], leafDays: 3, want: ['old'] },
    { name: 'a bridge that expires before our leaf does not count', roots: () => [root('old'), root('new', ['new-by-old'])], leafDays: 30, want: ['new', 'old'] },
    { name: 'once the old root is pruned the new one is trusted', roots: () => [root('new', ['new-by-old'])], leafDays: 3, want: ['new'] },
    { name: 'an intermediate for another key is no bridge', roots: () => [root('old'), root('new', ['other-by-old'])], leafDays: 3, want: ['new', 'old'] },
    { name: 'an issuer name without the signature is no bridge', roots: () => [root('old'), root('new', ['new-by-fake-old'])], leafDays: 3, want: ['new', 'old'] },
    { name: 'roots bridging each other are both kept', roots: () => [root('old', ['old-by-new']), root('new', ['new-by-old'])], leafDays: 3, want: ['new', 'old'] },
    { name: 'a root without intermediates next to a bridged one', roots: () => [root('old'), root('new', ['new-by-old']), root('other')], leafDays: 3, want: ['old', 'other'] },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(ids(trustedRoots(c.roots(), inDays(c.leafDays))), c.want));
  }
  test('an unparseable leaf expiry keeps every root', () => {
    assert.deepEqual(ids(trustedRoots([root('old'), root('new', ['new-by-old'])], 'not a date')), ['new', 'old']);
  });
});
