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
 * A root's bridge is the root of the set that signed one of its intermediates where the
 * intermediate (1) has the root's own public key and (2) stays valid past `leafValidBefore` (our
 * own leaf's expiry, a stand-in for "every leaf now in use": when a renewed leaf outlives the
 * bridge, the new root joins the bundle). A root is left out when its bridge is kept. Successive
 * rotations make a chain (each new root cross-signed by the one before it), and the chain keeps
 * every other root counted from its oldest: the newest root is left out after an odd number of
 * rotations and kept after an even number, so the bundle, and HAProxy, reloads on every other
 * rotation, not on each. Roots bridging each other in a cycle are all kept.
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
 * the certificates and checking signatures costs about 0.5 ms: the same inputs reuse the result
 * (compared in place, without building a key: the roots' PEM text grows with every rotation).
 */
let last: { roots: readonly CaRoot[]; leafValidBefore: string; kept: readonly boolean[] } | undefined;

function sameRoots(a: readonly CaRoot[], b: readonly CaRoot[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  return a.every((root, i) => {
    const other = b[i] as CaRoot;
    const inter = root.intermediateCertsPem;
    return root.rootCertPem === other.rootCertPem && inter.length === other.intermediateCertsPem.length && inter.every((pem, j) => pem === other.intermediateCertsPem[j]);
  });
}

/**
 * The roots to trust: every root but those whose bridge is kept (see above).
 * Never empty when `roots` is not: the oldest root of a chain, and every root of a cycle, is kept.
 */
export function trustedRoots(roots: readonly CaRoot[], leafValidBefore: string): CaRoot[] {
  if (last === undefined || last.leafValidBefore !== leafValidBefore || !sameRoots(last.roots, roots)) {
    last = { roots, leafValidBefore, kept: keptRoots(roots, leafValidBefore) };
  }
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
  if (!Number.isFinite(until)) return parsed.map(() => true);
  const bridges = parsed.map((p) => {
    const bridge = bridgeOf(p, parsed, until);
    return bridge === undefined ? undefined : parsed.indexOf(bridge);
  });
  return keptAlongBridges(bridges);
}

/**
 * Given each root's bridge (an index, or undefined), whether each root is kept: a root without a
 * bridge is, a root whose bridge is kept is not, and a root whose bridge is not kept is. Every
 * root has at most one bridge, so following bridges from a root ends at a root without one or
 * enters a cycle; the roots of a cycle are kept.
 */
export function keptAlongBridges(bridges: readonly (number | undefined)[]): boolean[] {
  const kept: (boolean | undefined)[] = bridges.map(() => undefined);
  for (let i = 0; i < bridges.length; i++) {
    const path: number[] = [];
    let j: number | undefined = i;
    while (j !== undefined && kept[j] === undefined && !path.includes(j)) {
      path.push(j);
      j = bridges[j];
    }
    let end = path.length;
    // Whether the bridge of path[end - 1] is kept; undefined when it has none.
    let bridgeKept: boolean | undefined = j === undefined ? undefined : kept[j];
    if (j !== undefined && bridgeKept === undefined) {
      end = path.indexOf(j);
      for (const k of path.slice(end)) kept[k] = true;
      bridgeKept = true;
    }
    for (let k = end - 1; k >= 0; k--) {
      bridgeKept = bridgeKept === undefined || !bridgeKept;
      kept[path[k] as number] = bridgeKept;
    }
  }
  return kept.map((k) => k !== false);
}
