/**
 * The URI SANs of a certificate, read from Node's `X509Certificate.subjectAltName`.
 * Node joins entries with ', ' and writes any value that contains ', ', quotes, backslashes or
 * non-printable characters as a JSON string literal (`URI:"spiffe://a\u002c URI:spiffe://evil"`).
 * A naive split(', ') would turn one crafted URI into two identities; this tokenizer never does.
 */
import { X509Certificate } from 'node:crypto';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { parseSpiffeId, type SpiffeId } from './spiffe-id.js';

const ENTRY_SEPARATOR = ', ';
const URI_PREFIX = 'URI:';
/** A JSON string literal at the start of the input (the escapes JSON.parse accepts). */
const JSON_STRING_LITERAL = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/;

/** Splits Node's subjectAltName text into entries such as `URI:spiffe://...` or `DNS:example.com`. */
export function splitSubjectAltName(text: string): string[] {
  const entries: string[] = [];
  if (text === '') return entries;
  let current = '';
  let offset = 0;
  while (offset < text.length) {
    const separator = text.indexOf(ENTRY_SEPARATOR, offset);
    const quote = text.indexOf('"', offset);
    if (quote !== -1 && (separator === -1 || quote < separator)) {
      // A quoted value: everything up to its closing quote belongs to the current entry.
      current += text.slice(offset, quote);
      const literal = JSON_STRING_LITERAL.exec(text.slice(quote));
      if (literal === null) {
        throw new HaproxyConnectError('SPIFFE_ID_INVALID', `Certificate subjectAltName ${JSON.stringify(text)} has an unterminated quoted value`);
      }
      current += JSON.parse(literal[0]) as string;
      offset = quote + literal[0].length;
    } else if (separator !== -1) {
      current += text.slice(offset, separator);
      entries.push(current);
      current = '';
      offset = separator + ENTRY_SEPARATOR.length;
    } else {
      current += text.slice(offset);
      offset = text.length;
    }
  }
  entries.push(current);
  return entries;
}

/** The URI SANs of a certificate, in order. */
export function uriSansOf(cert: X509Certificate): string[] {
  const text = cert.subjectAltName;
  if (text === undefined) return [];
  return splitSubjectAltName(text)
    .filter((entry) => entry.startsWith(URI_PREFIX))
    .map((entry) => entry.slice(URI_PREFIX.length));
}

function toCertificate(input: string | Buffer | X509Certificate): X509Certificate {
  if (input instanceof X509Certificate) return input;
  try {
    return new X509Certificate(input);
  } catch (err) {
    throw new HaproxyConnectError('CERTIFICATE_INVALID', `Cannot parse certificate: ${errorMessage(err)}`, { cause: err });
  }
}

/** The SPIFFE ID of a certificate, which must carry exactly one URI SAN. */
export function spiffeIdOfCertificate(input: string | Buffer | X509Certificate): SpiffeId {
  const cert = toCertificate(input);
  const uris = uriSansOf(cert);
  if (uris.length !== 1) {
    throw new HaproxyConnectError(
      'SPIFFE_ID_INVALID',
      `Certificate ${cert.serialNumber} has ${uris.length} URI SANs (${uris.map((u) => JSON.stringify(u)).join(', ') || 'none'}); expected exactly one SPIFFE ID`,
    );
  }
  return parseSpiffeId(uris[0] ?? '');
}
