/**
 * The run-directory files that carry the sidecar's identity and trust: the leaf (certificate,
 * intermediates, key), the roots bundle, and the crt-list of the public listener. Pure.
 */
import type { ModelFile } from '../haproxy/model.js';
import { LEAF_FILE, PUBLIC_CRT_LIST_FILE, ROOTS_FILE } from '../domain/haproxy-names.js';
import type { Leaf, Roots } from '../domain/snapshot.js';
import { trustedRoots } from './trust-bundle.js';

/** The private key is readable by the haproxy user only. */
const PRIVATE_FILE_MODE = 0o600;
const PUBLIC_FILE_MODE = 0o644;

/**
 * SNI filter of the crt-list line. HAProxy 2.6 only applies runtime `commit ssl cert` /
 * `commit ssl ca-file` on a bind whose certificate has no CN and no DNS SAN (a Consul leaf) when
 * the certificate comes from a crt-list line with an explicit SNI filter (FACTS.md §2). Being the
 * first certificate of the bind, it is still the default one: clients without SNI, or with any
 * other name, get it too (checked with openssl s_client against 2.6.12).
 */
const PUBLIC_SNI_FILTER = '*.consul';

/** Trims each PEM block and joins them with single newlines, ending with one newline. */
function joinPem(blocks: readonly string[]): string {
  const parts = blocks.map((block) => block.trim()).filter((block) => block !== '');
  return parts.length === 0 ? '' : `${parts.join('\n')}\n`;
}

/** Intermediates of the active root: peers need them to chain our leaf to a root they trust. */
function activeIntermediates(roots: Roots): string[] {
  const active = roots.roots.find((root) => root.id === roots.activeRootId) ?? roots.roots.find((root) => root.active);
  return active === undefined ? [] : active.intermediateCertsPem;
}

export function leafFile(leaf: Leaf, roots: Roots): ModelFile {
  return {
    name: LEAF_FILE,
    content: joinPem([leaf.certPem, ...activeIntermediates(roots), leaf.privateKeyPem]),
    mode: PRIVATE_FILE_MODE,
  };
}

/**
 * The roots HAProxy trusts: Consul's roots less those bridged by a cross-signature (see
 * trust-bundle.ts), sorted by id so the bytes only change when the set does.
 */
export function rootsFile(roots: Roots, leaf: Leaf): ModelFile {
  const sorted = trustedRoots(roots.roots, leaf.validBefore).sort((a, b) => compareStrings(a.id, b.id));
  return { name: ROOTS_FILE, content: joinPem(sorted.map((root) => root.rootCertPem)), mode: PUBLIC_FILE_MODE };
}

/** `leaf.pem [ca-file roots.pem verify required alpn h2,http/1.1] *.consul` (configuration.txt 5.1 "crt-list"). */
export function publicCrtListFile(alpn: readonly string[] | undefined): ModelFile {
  const sslBindConf = [`ca-file ${ROOTS_FILE}`, 'verify required'];
  if (alpn !== undefined && alpn.length > 0) sslBindConf.push(`alpn ${alpn.join(',')}`);
  return {
    name: PUBLIC_CRT_LIST_FILE,
    content: `${LEAF_FILE} [${sslBindConf.join(' ')}] ${PUBLIC_SNI_FILTER}\n`,
    mode: PUBLIC_FILE_MODE,
  };
}

/** Locale-independent ordering, so output does not depend on the environment. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
