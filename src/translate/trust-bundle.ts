/**
 * Which Consul roots HAProxy must trust. PURE (certificate parsing only).
 *
 * When Consul rotates its CA it adds the new root and re-issues every leaf, and (unless told
 * `ForceWithoutCrossSigning`) it cross-signs the new root with the old one: the new root's
 * `IntermediateCerts` holds a certificate for the new root's key issued by the old root, and every
 * new leaf carries it (measured on Consul 1.16.2: valid for twice the leaf TTL plus a day). A new
 * leaf therefore verifies against the OLD root alone, and trusting the old root is enough while
 * the old root is still in the set and the cross-signature outlives the leaves.
 *
 * That matters on HAProxy 2.6.12: a runtime `commit ssl ca-file` on a file in use breaks every
 * later leaf commit and crashes the next CA commit (HAProxy issue #3165, fixed upstream in
 * 7482b6ebf, not in Debian's 2.6.12), and a reload costs keep-alive clients a few requests. So a
 * root that is bridged this way is left out of the bundle: a CA rotation then changes only the
 * leaf (at runtime), and the bundle changes once, when Consul prunes the old root — a reload.
 *
 * A root is bridged when one of its intermediates (1) has the root's own public key, (2) is
 * issued and signed by another root of the set that is itself kept, and (3) stays valid past
 * `leafValidBefore` (our own leaf's expiry, a stand-in for "every leaf now in use": when a renewed
 * leaf outlives the bridge, the new root joins the bundle).
 */
import { X509Certificate } from 'node:crypto';
import type { CaRoot } from '../domain/snapshot.js';

interface Parsed {
  /** Undefined when the root does not parse: it is kept as given (HAProxy's check judges it) and bridges nothing. */
  cert: X509Certificate | undefined;
  intermediates: X509Certificate[];
}

function parse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined; // not a certificate: neither a bridge nor bridged
  }
}

function sameKey(a: X509Certificate, b: X509Certificate): boolean {
  const der = (c: X509Certificate): Buffer => c.publicKey.export({ type: 'spki', format: 'der' });
  return der(a).equals(der(b));
}

/** The root (other than `self`) whose key signed a cross-signature of `self` valid until after `until`, if any. */
function bridgeOf(self: Parsed, all: readonly Parsed[], until: number): Parsed | undefined {
  const { cert } = self;
  if (cert === undefined) return undefined;
  for (const inter of self.intermediates) {
    if (!inter.ca || !sameKey(inter, cert) || !(Date.parse(inter.validTo) > until)) continue;
    const issuer = all.find((other) => other !== self && other.cert !== undefined && inter.checkIssued(other.cert) && inter.verify(other.cert.publicKey));
    if (issuer !== undefined) return issuer;
  }
  return undefined;
}

/**
 * The last answer. Roots change rarely, but translate runs on every endpoint change, and parsing
 * the certificates and checking signatures costs about 0.5 ms: the same inputs reuse the result.
 */
let last: { key: string; kept: readonly boolean[] } | undefined;

/**
 * The roots to trust: every root but those bridged by a cross-signature from another kept root.
 * Never empty when `roots` is not; a root whose bridge is itself bridged is kept.
 */
export function trustedRoots(roots: readonly CaRoot[], leafValidBefore: string): CaRoot[] {
  const key = JSON.stringify([leafValidBefore, roots.map((root) => [root.rootCertPem, root.intermediateCertsPem])]);
  if (last?.key !== key) last = { key, kept: keptRoots(roots, leafValidBefore) };
  const { kept } = last;
  return roots.filter((_, i) => kept[i]);
}

/** For each root, whether it is trusted. */
function keptRoots(roots: readonly CaRoot[], leafValidBefore: string): boolean[] {
  const until = Date.parse(leafValidBefore);
  const parsed: Parsed[] = roots.map((root) => ({
    cert: parse(root.rootCertPem),
    intermediates: root.intermediateCertsPem.map(parse).filter((c): c is X509Certificate => c !== undefined),
  }));
  const bridges = new Map<Parsed, Parsed>();
  if (Number.isFinite(until)) {
    for (const p of parsed) {
      const bridge = bridgeOf(p, parsed, until);
      if (bridge !== undefined) bridges.set(p, bridge);
    }
  }
  return parsed.map((p) => {
    const bridge = bridges.get(p);
    return bridge === undefined || bridges.has(bridge);
  });
}
