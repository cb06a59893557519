/**
 * HAProxy's `req.hdrs_bin` sample (cfg §7.3.6): every header line as `<str:name><str:value>`
 * (SPOE varint lengths), ended by two empty strings. PURE.
 */
import { SpopFrameError } from './types.js';
import { WireReader, WireWriter } from './wire.js';

// Header values are bytes; as Envoy's RE2 does, read them as UTF-8 (invalid sequences become U+FFFD).
const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** The header lines in order, names in lower case. Throws SpopFrameError on a malformed block. */
export function decodeHdrsBin(block: Buffer): Array<[string, string]> {
  const r = new WireReader(block);
  const headers: Array<[string, string]> = [];
  for (;;) {
    // Views of the block, turned into strings at once.
    const name = r.view('header name');
    const value = r.view('header value');
    if (name.length === 0 && value.length === 0) break;
    if (name.length === 0) throw new SpopFrameError('req.hdrs_bin: a header with an empty name');
    headers.push([name.toString('latin1').toLowerCase(), utf8.decode(value)]);
  }
  if (r.remaining !== 0) throw new SpopFrameError(`req.hdrs_bin: ${r.remaining} byte(s) after the end marker`);
  return headers;
}

/** The inverse, for tests and fakes. */
export function encodeHdrsBin(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  const w = new WireWriter();
  for (const [name, value] of headers) {
    w.lengthPrefixed(Buffer.from(name, 'latin1'));
    w.lengthPrefixed(Buffer.from(value, 'utf8'));
  }
  w.varint(0);
  w.varint(0);
  return Buffer.from(w.finish());
}
