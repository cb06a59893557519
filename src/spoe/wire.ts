/**
 * Byte-level reading and writing for SPOP: big-endian integers, HAProxy's "peers" varints
 * (64-bit, decoded with BigInt or exact float arithmetic, never 32-bit shifts) and length-prefixed
 * byte strings. Every read is bounds-checked and throws SpopFrameError naming what it was reading.
 */
import { SPOP_STATUS, SpopFrameError } from './types.js';

export const MAX_UINT64 = (1n << 64n) - 1n;
export const MAX_UINT32 = 0xffff_ffff;
/** Values below this are one byte; above it the first byte carries 4 bits and the flag 0xF0. */
const VARINT_ONE_BYTE_LIMIT = 240;
/** 4 + 7 * 9 = 67 bits cover 64: a longer varint is invalid (checked again by value). */
const VARINT_MAX_BYTES = 10;

// ignoreBOM: a leading U+FEFF is part of the string, not a marker to strip (found by the round-trip property test).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** True when every byte of bytes[from, to) is below 0x80. */
function isAscii(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if ((bytes[i] as number) > 0x7f) return false;
  return true;
}

/** Strings of only these characters are the same bytes in latin1 and in UTF-8. */
const ASCII_ONLY = /^[\x00-\x7f]*$/;

export class WireReader {
  readonly #buf: Buffer;
  #pos: number;
  readonly #end: number;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  get offset(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#end - this.#pos;
  }

  #need(n: number, what: string): void {
    if (this.#end - this.#pos < n) {
      throw new SpopFrameError(`SPOP frame truncated: ${what} needs ${n} byte(s) at offset ${this.#pos}, only ${this.#end - this.#pos} left`);
    }
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#buf[this.#pos++] as number;
  }

  u32be(what: string): number {
    this.#need(4, what);
    const v = this.#buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }

  /** A varint as a bigint in 0..2^64-1. */
  varint(what: string): bigint {
    const start = this.#pos;
    const first = this.u8(what);
    if (first < VARINT_ONE_BYTE_LIMIT) return BigInt(first);
    let value = BigInt(first);
    let shift = 4n;
    for (let count = 1; ; count++) {
      if (count >= VARINT_MAX_BYTES) throw this.#varintTooLong(what, start);
      const b = this.u8(what);
      value += BigInt(b) << shift;
      if (value > MAX_UINT64) throw this.#varintTooLong(what, start);
      shift += 7n;
      if (b < 128) return value;
    }
  }

  /**
   * A varint that must be at most `max` (≤ 2^32): exact float arithmetic (multiplication, not
   * shifts), stopping as soon as the value passes `max` so no input can loop or lose precision.
   */
  varintUpTo(max: number, what: string, suffix = ''): number {
    // `suffix` completes `what` in messages only: no label is built while the input is good.
    const start = this.#pos;
    if (this.#end - this.#pos < 1) this.#need(1, what + suffix);
    const first = this.#buf[this.#pos++] as number;
    let value = first;
    if (first >= VARINT_ONE_BYTE_LIMIT) {
      let scale = 16; // 2^4
      for (let count = 1; ; count++) {
        if (count >= VARINT_MAX_BYTES) throw this.#varintTooLong(what + suffix, start);
        if (this.#end - this.#pos < 1) this.#need(1, what + suffix);
        const b = this.#buf[this.#pos++] as number;
        value += b * scale;
        if (value > max) break;
        scale *= 128;
        if (b < 128) break;
      }
    }
    if (value > max) {
      throw new SpopFrameError(`SPOP ${what}${suffix} at offset ${start} is ${value}, above the limit ${max}`);
    }
    return value;
  }

  #varintTooLong(what: string, start: number): SpopFrameError {
    return new SpopFrameError(`SPOP ${what} at offset ${start} is a varint longer than 64 bits`);
  }

  bytes(n: number, what: string): Buffer {
    this.#need(n, what);
    // A copy: decoded values must not pin or alias the connection's receive buffer.
    const out = Buffer.allocUnsafe(n);
    this.#buf.copy(out, 0, this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /**
   * <LENGTH:varint><BYTES> as a view of the frame (no copy): only for bytes the caller turns into
   * something else at once (a string), never kept.
   */
  view(what: string): Buffer {
    const from = this.#span(what);
    return this.#buf.subarray(from, this.#pos);
  }

  /** Reads <LENGTH:varint>, steps over the bytes it announces and returns where they start. */
  #span(what: string): number {
    const len = this.varintUpTo(this.remaining, what, ' length');
    this.#need(len, what);
    const from = this.#pos;
    this.#pos += len;
    return from;
  }

  /** The rest of the frame, copied. */
  rest(): Buffer {
    return this.bytes(this.remaining, 'payload');
  }

  /** <LENGTH:varint><BYTES>, bounded by what is left in the frame. */
  lengthPrefixed(what: string): Buffer {
    const len = this.varintUpTo(this.remaining, what, ' length');
    return this.bytes(len, what);
  }

  string(what: string): string {
    const start = this.#pos;
    const from = this.#span(what);
    // Names and most values are ASCII: read as latin1 (the same characters) without the decoder.
    if (isAscii(this.#buf, from, this.#pos)) return this.#buf.toString('latin1', from, this.#pos);
    try {
      return utf8.decode(this.#buf.subarray(from, this.#pos));
    } catch {
      throw new SpopFrameError(`SPOP ${what} at offset ${start} is not valid UTF-8`);
    }
  }
}

/** A growable output buffer. */
export class WireWriter {
  #buf: Buffer;
  #len = 0;

  constructor(initialSize = 256) {
    this.#buf = Buffer.allocUnsafe(initialSize);
  }

  #grow(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  get length(): number {
    return this.#len;
  }

  u8(v: number): void {
    this.#grow(1);
    this.#buf[this.#len++] = v & 0xff;
  }

  u32be(v: number): void {
    this.#grow(4);
    this.#buf.writeUInt32BE(v >>> 0, this.#len);
    this.#len += 4;
  }

  /** Patches a big-endian u32 written earlier (the frame length). */
  setU32be(at: number, v: number): void {
    this.#buf.writeUInt32BE(v >>> 0, at);
  }

  varint(v: bigint | number): void {
    if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v < VARINT_ONE_BYTE_LIMIT) {
      this.u8(v);
      return;
    }
    let i = typeof v === 'bigint' ? v : BigInt(v);
    if (i < 0n || i > MAX_UINT64) {
      throw new SpopFrameError(`cannot encode ${i} as a SPOP varint: out of 0..2^64-1`, SPOP_STATUS.UNKNOWN);
    }
    if (i < 240n) {
      this.u8(Number(i));
      return;
    }
    this.u8(Number(i & 0xffn) | 0xf0);
    i = (i - 240n) >> 4n;
    while (i >= 128n) {
      this.u8(Number(i & 0xffn) | 0x80);
      i = (i - 128n) >> 7n;
    }
    this.u8(Number(i));
  }

  bytes(b: Uint8Array): void {
    this.#grow(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  lengthPrefixed(b: Uint8Array): void {
    this.varint(b.length);
    this.bytes(b);
  }

  string(s: string): void {
    const ascii = ASCII_ONLY.test(s);
    const n = ascii ? s.length : Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.#grow(n);
    this.#len += this.#buf.write(s, this.#len, n, ascii ? 'latin1' : 'utf8');
  }

  /** The bytes written so far (a copy-free view of a fresh-enough buffer). */
  finish(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }
}
