/**
 * Checks of the certificates Consul hands us, before they reach HAProxy: a leaf whose PEM does
 * not parse, whose key is not the certificate's, or that has expired would make HAProxy refuse the
 * configuration (or serve an identity peers reject), so it never replaces a good one. PURE but for
 * certificate parsing; the clock is an argument.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import type { Leaf } from './snapshot.js';

/**
 * Answers of `certificateProblem` by PEM text, which decides them. Every translation checks every
 * root and intermediate, and a parse costs 130–140 µs here (a P-256 root; a lookup 11 ns): in a
 * profile of 100 intention flips it was the largest step of translating (0.7 ms a flip).
 * Bounded: cleared when full.
 */
const parsed = new Map<string, string | null>();
const MAX_REMEMBERED_CERTIFICATES = 256;

/** Why `pem` is not one readable X.509 certificate, or undefined when it is. */
export function certificateProblem(pem: string): string | undefined {
  const known = parsed.get(pem);
  if (known !== undefined) return known ?? undefined;
  const problem = parseProblem(pem);
  if (parsed.size >= MAX_REMEMBERED_CERTIFICATES) parsed.clear();
  parsed.set(pem, problem ?? null);
  return problem;
}

function parseProblem(pem: string): string | undefined {
  if (pem.trim() === '') return 'is empty';
  try {
    new X509Certificate(pem);
    return undefined;
  } catch (err) {
    return `does not parse as a PEM certificate (${(err as Error).message})`;
  }
}

/**
 * Why this leaf cannot be served, or undefined when it can: its certificate and key must parse,
 * the key must be the certificate's, and the certificate must still be valid at `nowMs`.
 */
export function leafProblem(leaf: Leaf, nowMs: number): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(leaf.certPem);
  } catch (err) {
    return `its CertPEM does not parse as a PEM certificate (${(err as Error).message})`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(leaf.privateKeyPem);
  } catch (err) {
    return `its PrivateKeyPEM does not parse as a PEM private key (${(err as Error).message})`;
  }
  if (!cert.checkPrivateKey(key)) return `its PrivateKeyPEM is not the key of its certificate (serial ${cert.serialNumber})`;
  const validTo = Date.parse(cert.validTo);
  if (!(validTo > nowMs)) return `its certificate (serial ${cert.serialNumber}) expired at ${new Date(validTo).toISOString()}`;
  return undefined;
}
