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
import fc from 'fast-check';
import { keptAlongBridges, trustedRoots } from '../../src/translate/trust-bundle.js';

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
  // Four rotations' worth: each root cross-signed by the one before it, as Consul does.
  ca('newer');
  ca('newest');
  crossSign('newer-by-new', 'newer', 'new', 7);
  crossSign('newest-by-newer', 'newest', 'newer', 7);
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
    {
      name: 'three rotations: every other root of the chain, counted from the oldest',
      roots: () => [root('newest', ['newest-by-newer']), root('old'), root('newer', ['newer-by-new']), root('new', ['new-by-old'])],
      leafDays: 3,
      want: ['newer', 'old'],
    },
    {
      name: 'two rotations: the newest root joins the bundle (its bridge is left out)',
      roots: () => [root('old'), root('new', ['new-by-old']), root('newer', ['newer-by-new'])],
      leafDays: 3,
      want: ['newer', 'old'],
    },
    {
      name: 'the oldest root pruned: the chain is counted again from the next one',
      roots: () => [root('new', ['new-by-old']), root('newer', ['newer-by-new']), root('newest', ['newest-by-newer'])],
      leafDays: 3,
      want: ['new', 'newest'],
    },
    { name: 'a root without intermediates next to a bridged one', roots: () => [root('old'), root('new', ['new-by-old']), root('other')], leafDays: 3, want: ['old', 'other'] },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(ids(trustedRoots(c.roots(), inDays(c.leafDays))), c.want));
  }
  test('the same roots with other PEM strings of the same text are not recomputed, and other roots are', () => {
    const roots = [root('old'), root('new', ['new-by-old'])];
    const copy = roots.map((r) => ({ ...r, rootCertPem: `${r.rootCertPem} `.trimEnd(), intermediateCertsPem: [...r.intermediateCertsPem] }));
    assert.deepEqual(ids(trustedRoots(roots, inDays(3))), ['old']);
    assert.deepEqual(ids(trustedRoots(copy, inDays(3))), ['old']);
    assert.deepEqual(ids(trustedRoots([root('old'), root('new', ['other-by-old'])], inDays(3))), ['new', 'old']);
  });
  test('an unparseable leaf expiry keeps every root', () => {
    assert.deepEqual(ids(trustedRoots([root('old'), root('new', ['new-by-old'])], 'not a date')), ['new', 'old']);
  });
});

describe('kept along bridges', () => {
  test('a chain keeps every other root from its end; a cycle keeps all its roots', () => {
    assert.deepEqual(keptAlongBridges([]), []);
    assert.deepEqual(keptAlongBridges([undefined, 0, 1, 2, 3]), [true, false, true, false, true]);
    assert.deepEqual(keptAlongBridges([3, 2, undefined, 1]), [false, false, true, true]);
    assert.deepEqual(keptAlongBridges([1, 0, 1]), [true, true, false]);
    assert.deepEqual(keptAlongBridges([0]), [true]);
  });
  test('for any bridges: a root is kept exactly when it has no bridge, its bridge is left out, or it is on a cycle; never empty', () => {
    const onCycle = (bridges: readonly (number | undefined)[], i: number): boolean => {
      let j = bridges[i];
      for (let steps = 0; j !== undefined && steps < bridges.length; steps++, j = bridges[j]) if (j === i) return true;
      return false;
    };
    const arb = fc.integer({ min: 1, max: 12 }).chain((n) => fc.array(fc.option(fc.nat({ max: n - 1 }), { nil: undefined }), { minLength: n, maxLength: n }));
    fc.assert(
      fc.property(arb, (bridges) => {
        const kept = keptAlongBridges(bridges);
        assert.ok(kept.some(Boolean));
        bridges.forEach((b, i) => {
          const want = b === undefined || onCycle(bridges, i) || !kept[b];
          assert.equal(kept[i], want, `root ${i} (bridge ${b}) in ${JSON.stringify(bridges)}`);
        });
      }),
    );
  });
});
