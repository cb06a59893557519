/**
 * A small DER writer for tests that need certificates no CA tool makes: hostile subjects (quotes,
 * separators, line breaks, any string type, unknown attributes, multi-valued RDNs) and hostile
 * SANs. The certificates are real (signed by a throwaway P-256 key), so Node and OpenSSL read them.
 */
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';

export function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  let header: number[];
  if (n < 0x80) header = [tag, n];
  else if (n < 0x100) header = [tag, 0x81, n];
  else if (n < 0x10000) header = [tag, 0x82, n >> 8, n & 0xff];
  else header = [tag, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from(header), content]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
export const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const [a, b, ...rest] = arcs as [bigint, bigint, ...bigint[]];
  const bytes: number[] = [];
  for (const arc of [a * 40n + b, ...rest]) {
    const chunk: number[] = [Number(arc & 0x7fn)];
    let v = arc >> 7n;
    while (v > 0n) {
      chunk.unshift(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

export const TAG = { UTF8: 0x0c, PRINTABLE: 0x13, T61: 0x14, IA5: 0x16, UNIVERSAL: 0x1c, BMP: 0x1e, OCTET_STRING: 0x04 } as const;

/** A string value in the given universal string type (BMP: UTF-16BE, Universal: UTF-32BE, T61/IA5/Printable: Latin-1). */
export function stringValue(tag: number, text: string): Buffer {
  if (tag === TAG.UTF8) return tlv(tag, Buffer.from(text, 'utf8'));
  if (tag === TAG.BMP) return tlv(tag, Buffer.from(text, 'utf16le').swap16());
  if (tag === TAG.UNIVERSAL) {
    const points = [...text].map((c) => c.codePointAt(0) ?? 0);
    const buf = Buffer.alloc(points.length * 4);
    points.forEach((p, i) => {
      buf.writeUInt32BE(p, i * 4);
    });
    return tlv(tag, buf);
  }
  return tlv(tag, Buffer.from(text, 'latin1'));
}

/** One attribute: its type OID and its value element (build it with stringValue or tlv). */
export interface Attribute {
  oid: string;
  value: Buffer;
}

/** A Name from RDNs, each a list of attributes (more than one: a multi-valued RDN). */
export function name(rdns: ReadonlyArray<ReadonlyArray<Attribute>>): Buffer {
  return seq(...rdns.map((rdn) => set(...rdn.map((a) => seq(oid(a.oid), a.value)))));
}

export const CN = '2.5.4.3';
export const O = '2.5.4.10';
export const OU = '2.5.4.11';

export interface CertificateSpec {
  subject?: ReadonlyArray<ReadonlyArray<Attribute>>;
  /** SAN entries; none: no subjectAltName extension. */
  uris?: ReadonlyArray<string | Buffer>;
  dnsNames?: ReadonlyArray<string | Buffer>;
  serial?: number;
}

let signer: { privateKey: KeyObject; publicKey: KeyObject } | undefined;

/** A signed X.509 v3 certificate (DER) with the subject and SANs asked for. */
export function certificate(spec: CertificateSpec = {}): Buffer {
  signer ??= generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const utc = (s: string): Buffer => tlv(0x17, Buffer.from(s, 'latin1'));
  const general = (tag: number, v: string | Buffer): Buffer => tlv(tag, typeof v === 'string' ? Buffer.from(v, 'latin1') : v);
  const sans = [...(spec.uris ?? []).map((u) => general(0x86, u)), ...(spec.dnsNames ?? []).map((d) => general(0x82, d))];
  const extensions = sans.length === 0 ? [] : [tlv(0xa3, seq(seq(oid('2.5.29.17'), tlv(0x04, seq(...sans)))))];
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, Buffer.from([spec.serial ?? 7])),
    ecdsaWithSha256,
    name([[{ oid: CN, value: stringValue(TAG.UTF8, 'Test CA') }]]),
    seq(utc('250101000000Z'), utc('350101000000Z')),
    name(spec.subject ?? []),
    signer.publicKey.export({ type: 'spki', format: 'der' }),
    ...extensions,
  );
  const signature = sign('sha256', tbs, signer.privateKey);
  return seq(tbs, ecdsaWithSha256, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
}
