/**
 * The `x-forwarded-client-cert` element Envoy adds on Consul's public listener (Consul 1.16.2,
 * agent/xds/listeners.go: APPEND_FORWARD with Subject, Cert, Chain, Dns and Uri set, unless the
 * mesh config entry sets HTTP.SanitizeXForwardedClientCert), computed from the client
 * certificate's DER as HAProxy hands it over (`ssl_c_der`). Pure: no I/O, no clock.
 *
 * Envoy 1.23-1.26 (source/common/http/conn_manager_utility.cc, mutateXfccRequestHeader) writes,
 * joined by `;`:
 *   By=<each URI SAN of OUR certificate>;Hash=<sha256 of the peer DER, lower-case hex>;
 *   Cert="<url-encoded PEM>";Chain="<url-encoded PEMs>";Subject="<RFC 2253 subject>";
 *   URI=<each URI SAN of the peer, or one empty URI=>;DNS=<each DNS SAN of the peer>
 * in that order: By and Hash first, then the details in the order the HTTP connection manager
 * config lists them (source/extensions/filters/network/http_connection_manager/config.cc:
 * Cert, Chain, Subject, URI, DNS), whatever order Consul set them in.
 *
 * - Cert: BoringSSL's PEM_write_bio_X509 (64-character base64 lines, each ending in "\n") with
 *   only "\n", " ", "+", "/" and "=" percent-encoded (ConnectionInfoImplBase::
 *   urlEncodedPemEncodedPeerCertificate; Envoy switched to a full URL encoder only in 2025, which
 *   gives the same bytes for a PEM).
 * - Chain: the peer's full chain as it sent it, leaf first (SSL_get_peer_full_cert_chain), each
 *   certificate encoded as Cert and concatenated.
 * - Subject: X509_NAME_print_ex(XN_FLAG_RFC2253) as BoringSSL prints it (crypto/x509/name_print.c,
 *   crypto/asn1/a_strex.c): RDNs last to first, "," between RDNs and "+" inside one, short names
 *   (numeric OID and a "#<hex DER>" value for unknown attributes), `\` before `"` `\` `,` `+` `<`
 *   `>` `;`, a leading `#` or space and a trailing space, `\XX` (upper-case hex) for control
 *   characters and for every byte above 0x7f of the value's UTF-8 (UTF8String bytes are taken as
 *   they are, Latin-1/BMP/Universal strings are converted), "#<hex DER>" for non-string values.
 *   Written (as `Subject=""`) even when the subject is empty, as Consul's leaves have it.
 * - URI, DNS, By: the SAN bytes as they are (Envoy does not quote or escape them); the only
 *   deviation: bytes Envoy would copy raw into the header although they cannot be in one (control
 *   characters, DEL) and bytes above 0x7f are percent-encoded, so the element is always one line
 *   of printable ASCII.
 */
import { createHash } from 'node:crypto';
import { HaproxyConnectError } from '../errors.js';

/** The request header the element is appended to (APPEND_FORWARD: `<existing>,<element>`). */
export { XFCC_HEADER } from '../domain/haproxy-names.js';

/** The X.509 subjectAltName extension, and the GeneralName tags Envoy reads. */
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const TAG_DNS_NAME = 0x82;
const TAG_URI = 0x86;

/** Universal tags (single identifier byte, class universal). */
const TAG_INTEGER = 0x02;
const TAG_OID = 0x06;
const TAG_UTF8 = 0x0c;
const TAG_NUMERIC = 0x12;
const TAG_PRINTABLE = 0x13;
const TAG_T61 = 0x14;
const TAG_IA5 = 0x16;
const TAG_UNIVERSAL = 0x1c;
const TAG_BMP = 0x1e;
const TAG_SEQUENCE = 0x30;
const TAG_SET = 0x31;
const TAG_VERSION = 0xa0;
const TAG_EXTENSIONS = 0xa3;

/**
 * Short names of the attribute types, as BoringSSL's object table has them (crypto/obj/obj_dat.h).
 * Any other attribute is printed as its numeric OID with a "#<hex DER>" value, as BoringSSL prints
 * attributes it does not know (OpenSSL 1.1+ knows a few more, e.g. organizationIdentifier and the
 * EV jurisdiction attributes; BoringSSL, which Envoy uses, does not).
 */
const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  ['2.5.4.3', 'CN'],
  ['2.5.4.4', 'SN'],
  ['2.5.4.5', 'serialNumber'],
  ['2.5.4.6', 'C'],
  ['2.5.4.7', 'L'],
  ['2.5.4.8', 'ST'],
  ['2.5.4.9', 'street'],
  ['2.5.4.10', 'O'],
  ['2.5.4.11', 'OU'],
  ['2.5.4.12', 'title'],
  ['2.5.4.13', 'description'],
  ['2.5.4.14', 'searchGuide'],
  ['2.5.4.15', 'businessCategory'],
  ['2.5.4.16', 'postalAddress'],
  ['2.5.4.17', 'postalCode'],
  ['2.5.4.18', 'postOfficeBox'],
  ['2.5.4.19', 'physicalDeliveryOfficeName'],
  ['2.5.4.20', 'telephoneNumber'],
  ['2.5.4.21', 'telexNumber'],
  ['2.5.4.22', 'teletexTerminalIdentifier'],
  ['2.5.4.23', 'facsimileTelephoneNumber'],
  ['2.5.4.24', 'x121Address'],
  ['2.5.4.25', 'internationaliSDNNumber'],
  ['2.5.4.26', 'registeredAddress'],
  ['2.5.4.27', 'destinationIndicator'],
  ['2.5.4.28', 'preferredDeliveryMethod'],
  ['2.5.4.29', 'presentationAddress'],
  ['2.5.4.30', 'supportedApplicationContext'],
  ['2.5.4.31', 'member'],
  ['2.5.4.32', 'owner'],
  ['2.5.4.33', 'roleOccupant'],
  ['2.5.4.34', 'seeAlso'],
  ['2.5.4.35', 'userPassword'],
  ['2.5.4.36', 'userCertificate'],
  ['2.5.4.37', 'cACertificate'],
  ['2.5.4.38', 'authorityRevocationList'],
  ['2.5.4.39', 'certificateRevocationList'],
  ['2.5.4.40', 'crossCertificatePair'],
  ['2.5.4.41', 'name'],
  ['2.5.4.42', 'GN'],
  ['2.5.4.43', 'initials'],
  ['2.5.4.44', 'generationQualifier'],
  ['2.5.4.45', 'x500UniqueIdentifier'],
  ['2.5.4.46', 'dnQualifier'],
  ['2.5.4.47', 'enhancedSearchGuide'],
  ['2.5.4.48', 'protocolInformation'],
  ['2.5.4.49', 'distinguishedName'],
  ['2.5.4.50', 'uniqueMember'],
  ['2.5.4.51', 'houseIdentifier'],
  ['2.5.4.52', 'supportedAlgorithms'],
  ['2.5.4.53', 'deltaRevocationList'],
  ['2.5.4.54', 'dmdName'],
  ['2.5.4.65', 'pseudonym'],
  ['2.5.4.72', 'role'],
  ['1.2.840.113549.1.9.1', 'emailAddress'],
  ['0.9.2342.19200300.100.1.1', 'UID'],
  ['0.9.2342.19200300.100.1.25', 'DC'],
]);

/** One DER element: its identifier byte and where its header, content and end are in the buffer. */
interface Tlv {
  tag: number;
  start: number;
  contentStart: number;
  end: number;
}

function malformed(what: string): HaproxyConnectError {
  return new HaproxyConnectError('CERTIFICATE_INVALID', `Cannot read the client certificate for x-forwarded-client-cert: ${what}`);
}

/** Reads the DER element at `offset` (definite lengths only, as DER requires), within `limit`. */
function readTlv(buf: Buffer, offset: number, limit: number): Tlv {
  if (offset + 2 > limit) throw malformed(`truncated element at byte ${offset}`);
  const tag = buf[offset] as number;
  let pos = offset + 1;
  if ((tag & 0x1f) === 0x1f) {
    // A high tag number: skip its continuation bytes (no element we read has one).
    while (pos < limit && ((buf[pos] as number) & 0x80) !== 0) pos += 1;
    pos += 1;
  }
  if (pos >= limit) throw malformed(`truncated element at byte ${offset}`);
  const first = buf[pos] as number;
  pos += 1;
  let length = first;
  if (first === 0x80) throw malformed(`indefinite length at byte ${offset}`);
  if (first > 0x80) {
    const count = first & 0x7f;
    if (count > 4 || pos + count > limit) throw malformed(`bad length at byte ${offset}`);
    length = 0;
    for (let i = 0; i < count; i += 1) length = length * 256 + (buf[pos + i] as number);
    pos += count;
  }
  const end = pos + length;
  if (end > limit) throw malformed(`element at byte ${offset} runs past its container`);
  return { tag, start: offset, contentStart: pos, end };
}

/** The children of a constructed element, in order. */
function children(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let offset = parent.contentStart;
  while (offset < parent.end) {
    const child = readTlv(buf, offset, parent.end);
    out.push(child);
    offset = child.end;
  }
  return out;
}

function expectTag(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (tlv === undefined || tlv.tag !== tag) throw malformed(`${what} is missing or has tag 0x${(tlv?.tag ?? 0).toString(16)}`);
  return tlv;
}

/** An OBJECT IDENTIFIER's content as dotted decimal (OBJ_obj2txt with no_name). */
function oidText(content: Buffer): string {
  const arcs: bigint[] = [];
  let value = 0n;
  for (const byte of content) {
    value = (value << 7n) | BigInt(byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0n;
    }
  }
  const [first, ...rest] = arcs;
  if (first === undefined || value !== 0n) throw malformed('bad object identifier');
  const top = first < 40n ? 0n : first < 80n ? 1n : 2n;
  return [top, first - top * 40n, ...rest].map(String).join('.');
}

interface NameEntry {
  oid: string;
  /** Index of the RDN (SET) the attribute is in. */
  set: number;
  /** The whole value element (tag, length, content). */
  value: Buffer;
  tag: number;
  content: Buffer;
}

function nameEntries(buf: Buffer, name: Tlv): NameEntry[] {
  const entries: NameEntry[] = [];
  children(buf, name).forEach((rdn, set) => {
    expectTag(rdn, TAG_SET, 'a relative distinguished name');
    for (const ava of children(buf, rdn)) {
      expectTag(ava, TAG_SEQUENCE, 'an attribute of the subject');
      const [type, value] = children(buf, ava);
      const oid = expectTag(type, TAG_OID, 'an attribute type');
      if (value === undefined) throw malformed('an attribute without a value');
      entries.push({
        oid: oidText(buf.subarray(oid.contentStart, oid.end)),
        set,
        value: buf.subarray(value.start, value.end),
        tag: value.tag,
        content: buf.subarray(value.contentStart, value.end),
      });
    }
  });
  return entries;
}

const HEX = '0123456789ABCDEF';

function hexUpper(bytes: Buffer): string {
  let out = '';
  for (const b of bytes) out += (HEX[b >> 4] as string) + (HEX[b & 0xf] as string);
  return out;
}

/** BoringSSL's UTF8_putc: up to six bytes, nothing for values it cannot encode. */
function utf8Put(c: number): number[] {
  if (c < 0x80) return [c];
  if (c < 0x800) return [0xc0 | (c >>> 6), 0x80 | (c & 0x3f)];
  if (c < 0x10000) return [0xe0 | (c >>> 12), 0x80 | ((c >>> 6) & 0x3f), 0x80 | (c & 0x3f)];
  if (c < 0x200000) return [0xf0 | (c >>> 18), 0x80 | ((c >>> 12) & 0x3f), 0x80 | ((c >>> 6) & 0x3f), 0x80 | (c & 0x3f)];
  if (c < 0x4000000) return [0xf8 | (c >>> 24), 0x80 | ((c >>> 18) & 0x3f), 0x80 | ((c >>> 12) & 0x3f), 0x80 | ((c >>> 6) & 0x3f), 0x80 | (c & 0x3f)];
  if (c < 0x80000000) {
    return [0xfc | (c >>> 30), 0x80 | ((c >>> 24) & 0x3f), 0x80 | ((c >>> 18) & 0x3f), 0x80 | ((c >>> 12) & 0x3f), 0x80 | ((c >>> 6) & 0x3f), 0x80 | (c & 0x3f)];
  }
  return [];
}

/** do_esc_char with the RFC 2253 flags, for one byte of the value. */
function escapeByte(c: number, isFirst: boolean, isLast: boolean): string {
  if (c > 0x7f || c < 0x20 || c === 0x7f) return `\\${HEX[c >> 4] as string}${HEX[c & 0xf] as string}`;
  const ch = String.fromCharCode(c);
  if (ch === '\\' || ch === '"' || ch === ',' || ch === '+' || ch === '<' || ch === '>' || ch === ';') return `\\${ch}`;
  if ((isFirst && (ch === ' ' || ch === '#')) || (isLast && ch === ' ')) return `\\${ch}`;
  return ch;
}

/** Thrown where BoringSSL's print fails (a BMP or Universal string of the wrong length). */
class PrintFailed extends Error {}

/** ASN1_STRING_print_ex(ASN1_STRFLGS_RFC2253) of one attribute value. */
function printValue(entry: NameEntry, known: boolean): string {
  const width = entry.tag === TAG_UNIVERSAL ? 4 : entry.tag === TAG_BMP ? 2 : 1;
  const text = known && [TAG_UTF8, TAG_NUMERIC, TAG_PRINTABLE, TAG_T61, TAG_IA5, TAG_UNIVERSAL, TAG_BMP].includes(entry.tag);
  if (!text) return `#${hexUpper(entry.value)}`;
  const { content } = entry;
  if (content.length % width !== 0) throw new PrintFailed();
  // A UTF8String is taken byte by byte (it is UTF-8 already); the others are decoded to code
  // points and re-encoded as UTF-8, then escaped byte by byte.
  let out = '';
  for (let i = 0; i < content.length; i += width) {
    let c = 0;
    for (let k = 0; k < width; k += 1) c = c * 256 + (content[i + k] as number);
    const encoded = entry.tag === TAG_UTF8 ? [c] : utf8Put(c);
    for (let k = 0; k < encoded.length; k += 1) {
      out += escapeByte(encoded[k] as number, i === 0 && k === 0, i + width === content.length && k === encoded.length - 1);
    }
  }
  return out;
}

/** X509_NAME_print_ex(XN_FLAG_RFC2253) of a Name: last RDN first, "," between RDNs, "+" inside one. */
function rfc2253(entries: readonly NameEntry[]): string {
  let out = '';
  let previous: number | undefined;
  for (const entry of [...entries].reverse()) {
    if (previous !== undefined) out += previous === entry.set ? '+' : ',';
    previous = entry.set;
    const short = SHORT_NAMES.get(entry.oid);
    out += `${short ?? entry.oid}=`;
    try {
      out += printValue(entry, short !== undefined);
    } catch (err) {
      // BoringSSL stops printing there; Envoy keeps what was written.
      if (err instanceof PrintFailed) return out;
      throw err;
    }
  }
  return out;
}

/** The GeneralNames of the subjectAltName extension (none when it is absent, repeated or unreadable, as X509_get_ext_d2i). */
function subjectAltNames(buf: Buffer, extensions: Tlv | undefined): Array<{ tag: number; value: Buffer }> {
  if (extensions === undefined) return [];
  const list = expectTag(children(buf, extensions)[0], TAG_SEQUENCE, 'the extensions');
  const sans = children(buf, list).filter((ext) => {
    const id = children(buf, ext)[0];
    return id?.tag === TAG_OID && oidText(buf.subarray(id.contentStart, id.end)) === OID_SUBJECT_ALT_NAME;
  });
  if (sans.length !== 1) return [];
  try {
    const fields = children(buf, sans[0] as Tlv);
    const octets = fields[fields.length - 1];
    if (octets === undefined || octets.tag !== 0x04) return [];
    const names = readTlv(buf, octets.contentStart, octets.end);
    if (names.tag !== TAG_SEQUENCE || names.end !== octets.end) return [];
    return children(buf, names).map((n) => ({ tag: n.tag, value: buf.subarray(n.contentStart, n.end) }));
  } catch {
    return [];
  }
}

/**
 * A SAN (or our own URI) as Envoy copies it into the header, except bytes that cannot be in a
 * header value or are not ASCII: those are percent-encoded (see the file comment).
 */
function sanText(bytes: Buffer | string): string {
  const raw = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  let out = '';
  for (const b of raw) out += b < 0x20 || b >= 0x7f ? `%${HEX[b >> 4] as string}${HEX[b & 0xf] as string}` : String.fromCharCode(b);
  return out;
}

/** PEM_write_bio_X509: base64 in 64-character lines, every line (the last too) ending in "\n". */
export function certificatePem(der: Buffer): string {
  const base64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < base64.length; i += 64) body += `${base64.slice(i, i + 64)}\n`;
  return `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`;
}

/** Envoy 1.23-1.26's PEM "URL encoding": these five characters only. */
function urlEncodePem(pem: string): string {
  return pem.replace(/[\n +/=]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** The parts of a certificate the element is made of. */
interface ParsedCertificate {
  der: Buffer;
  subject: string;
  uris: string[];
  dnsNames: string[];
}

function parseCertificate(der: Buffer): ParsedCertificate {
  const cert = readTlv(der, 0, der.length);
  if (cert.tag !== TAG_SEQUENCE || cert.end !== der.length) throw malformed('not one DER certificate');
  const tbs = expectTag(children(der, cert)[0], TAG_SEQUENCE, 'tbsCertificate');
  const fields = children(der, tbs);
  let i = fields[0]?.tag === TAG_VERSION ? 1 : 0;
  expectTag(fields[i], TAG_INTEGER, 'the serial number');
  i += 1;
  expectTag(fields[i], TAG_SEQUENCE, 'the signature algorithm');
  expectTag(fields[i + 1], TAG_SEQUENCE, 'the issuer');
  expectTag(fields[i + 2], TAG_SEQUENCE, 'the validity');
  const subject = expectTag(fields[i + 3], TAG_SEQUENCE, 'the subject');
  expectTag(fields[i + 4], TAG_SEQUENCE, 'the public key');
  const extensions = fields.slice(i + 5).find((f) => f.tag === TAG_EXTENSIONS);
  const sans = subjectAltNames(der, extensions);
  return {
    der,
    subject: rfc2253(nameEntries(der, subject)),
    uris: sans.filter((s) => s.tag === TAG_URI).map((s) => sanText(s.value)),
    dnsNames: sans.filter((s) => s.tag === TAG_DNS_NAME).map((s) => sanText(s.value)),
  };
}

/**
 * Splits concatenated DER certificates (HAProxy's `ssl_c_chain_der`: the certificates the client
 * sent after its leaf, each DER, back to back) into one buffer per certificate.
 */
export function splitDerCertificates(concatenated: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < concatenated.length) {
    const tlv = readTlv(concatenated, offset, concatenated.length);
    if (tlv.tag !== TAG_SEQUENCE) throw malformed(`the chain has a non-certificate element at byte ${offset}`);
    out.push(concatenated.subarray(tlv.start, tlv.end));
    offset = tlv.end;
  }
  return out;
}

/**
 * The XFCC element Envoy appends for a connection whose client presented `clientDer` (DER, as
 * `ssl_c_der` gives it), served with our certificate whose URI SAN is `localSpiffeUri` ('' = none:
 * no By). `chainDer`: the certificates the client sent after its leaf, in order (HAProxy 2.6's
 * `ssl_c_chain_der`, split with splitDerCertificates; empty on resumed TLS sessions); Chain is
 * the leaf followed by them, which for Consul's built-in CA (no intermediates) is the leaf alone.
 * Throws CERTIFICATE_INVALID when `clientDer` is not a readable certificate.
 */
export function xfccElement(clientDer: Buffer, localSpiffeUri: string, chainDer: readonly Buffer[] = []): string {
  const cert = parseCertificate(clientDer);
  const parts: string[] = [];
  if (localSpiffeUri !== '') parts.push(`By=${sanText(localSpiffeUri)}`);
  parts.push(`Hash=${createHash('sha256').update(cert.der).digest('hex')}`);
  const cert64 = urlEncodePem(certificatePem(cert.der));
  parts.push(`Cert="${cert64}"`);
  parts.push(`Chain="${cert64}${chainDer.map((c) => urlEncodePem(certificatePem(c))).join('')}"`);
  parts.push(`Subject="${cert.subject}"`);
  if (cert.uris.length === 0) parts.push('URI=');
  for (const uri of cert.uris) parts.push(`URI=${uri}`);
  for (const dns of cert.dnsNames) parts.push(`DNS=${dns}`);
  return parts.join(';');
}
