/** SPOP codec: known byte layouts, round trips for every type and frame, and fuzzing. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isHaproxyConnectError } from '../../src/errors.js';
import { FrameSplitter, decodeFrame, decodeStream, encodeFrame } from '../../src/spoe/codec.js';
import { FLAG_FIN, SPOP_STATUS, SpopFrameError, VAR_SCOPES, type Frame, type KvPair, type SpoeAction, type TypedData } from '../../src/spoe/types.js';
import { MAX_UINT64, WireReader, WireWriter } from '../../src/spoe/wire.js';

const FUZZ_FRAMES = 20_000;
const FUZZ_BUDGET_MS = 20_000;
const MAX_FRAME = 16_384;

// --- arbitraries --------------------------------------------------------------------------------

const bytes = (min: number, max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));

const typedData: fc.Arbitrary<TypedData> = fc.oneof(
  fc.constant<TypedData>({ type: 'null' }),
  fc.boolean().map((value): TypedData => ({ type: 'bool', value })),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((value): TypedData => ({ type: 'int32', value })),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }).map((value): TypedData => ({ type: 'uint32', value })),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((value): TypedData => ({ type: 'int64', value })),
  fc.bigInt({ min: 0n, max: MAX_UINT64 }).map((value): TypedData => ({ type: 'uint64', value })),
  bytes(4, 4).map((value): TypedData => ({ type: 'ipv4', value })),
  bytes(16, 16).map((value): TypedData => ({ type: 'ipv6', value })),
  fc.string({ unit: 'binary', maxLength: 40 }).map((value): TypedData => ({ type: 'string', value })),
  bytes(0, 300).map((value): TypedData => ({ type: 'binary', value })),
);

const name = fc.string({ unit: 'binary', maxLength: 20 });
const kvList: fc.Arbitrary<KvPair[]> = fc.array(fc.record({ name, value: typedData }, { noNullPrototype: true }), { maxLength: 6 });
const id = fc.oneof(fc.bigInt({ min: 0n, max: 300n }), fc.bigInt({ min: 0n, max: MAX_UINT64 }));
const base = fc.record({ flags: fc.integer({ min: 0, max: 2 ** 32 - 1 }), streamId: id, frameId: id }, { noNullPrototype: true });
const action: fc.Arbitrary<SpoeAction> = fc.oneof(
  fc.record({ type: fc.constant('set-var' as const), scope: fc.constantFrom(...VAR_SCOPES), name, value: typedData }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('unset-var' as const), scope: fc.constantFrom(...VAR_SCOPES), name }, { noNullPrototype: true }),
);

const frame: fc.Arbitrary<Frame> = fc.oneof(
  ...(['haproxy-hello', 'haproxy-disconnect', 'agent-hello', 'agent-disconnect'] as const).map((type) => fc.tuple(base, kvList).map(([b, items]): Frame => ({ type, ...b, items }))),
  fc.tuple(base, fc.array(fc.record({ name, args: kvList }, { noNullPrototype: true }), { maxLength: 4 })).map(([b, messages]): Frame => ({ type: 'notify', ...b, messages })),
  fc.tuple(base, fc.array(action, { maxLength: 5 })).map(([b, actions]): Frame => ({ type: 'ack', ...b, actions })),
  fc.tuple(base, bytes(0, 50)).map(([b, payload]): Frame => ({ type: 'unset', ...b, payload })),
  fc
    .tuple(
      base,
      fc.integer({ min: 4, max: 255 }).filter((t) => t < 101 || t > 103),
      bytes(0, 50),
    )
    .map(([b, frameType, payload]): Frame => ({ type: 'unknown', frameType, ...b, payload })),
);

function varintBytes(v: bigint): number[] {
  const w = new WireWriter();
  w.varint(v);
  return [...w.finish()];
}

function assertTypedError(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    assert.ok(isHaproxyConnectError(err, 'SPOP_FRAME_INVALID'), `expected SPOP_FRAME_INVALID, got ${String(err)}`);
    return;
  }
}

// --- varints -------------------------------------------------------------------------------------

describe('varint (HAProxy peers encoding)', () => {
  const known: Array<[bigint, number[]]> = [
    [0n, [0x00]],
    [239n, [0xef]],
    [240n, [0xf0, 0x00]],
    [2287n, [0xff, 0x7f]],
    [2288n, [0xf0, 0x80, 0x00]],
    [264431n, [0xff, 0xff, 0x7f]],
    [264432n, [0xf0, 0x80, 0x80, 0x00]],
  ];
  for (const [value, encoded] of known) {
    test(`${value} <-> ${Buffer.from(encoded).toString('hex')}`, () => {
      const w = new WireWriter();
      w.varint(value);
      assert.deepEqual([...w.finish()], encoded);
      assert.equal(new WireReader(Buffer.from(encoded)).varint('v'), value);
    });
  }

  test('64-bit values survive (no 32-bit shifts)', () => {
    for (const value of [2n ** 32n, 2n ** 32n + 1n, 2n ** 53n + 1n, MAX_UINT64]) {
      const w = new WireWriter();
      w.varint(value);
      assert.equal(new WireReader(w.finish()).varint('v'), value);
    }
  });

  test('round trip for any 64-bit value; varintUpTo agrees for small ones', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_UINT64 }), (value) => {
        const w = new WireWriter();
        w.varint(value);
        const buf = w.finish();
        assert.equal(new WireReader(buf).varint('v'), value);
        if (value <= 0xffff_ffffn) assert.equal(new WireReader(buf).varintUpTo(2 ** 32 - 1, 'v'), Number(value));
      }),
      { numRuns: 2000 },
    );
  });

  test('a string starting with U+FEFF keeps it (regression: the decoder stripped it as a BOM)', () => {
    const frame: Frame = { type: 'haproxy-disconnect', flags: 0, streamId: 0n, frameId: 0n, items: [{ name: '\uFEFFname', value: { type: 'null' } }] } as Frame;
    assert.deepEqual(decodeFrame(encodeFrame(frame).subarray(4)), frame);
  });

  test('values above 2^64 and endless continuation bytes are rejected', () => {
    assert.throws(
      () => new WireReader(Buffer.alloc(64, 0xff)).varint('v'),
      (e) => e instanceof SpopFrameError && /longer than 64 bits/.test(e.message),
    );
    assert.throws(() => new WireReader(Buffer.from([0xf0, 0x80])).varint('stream-id'), /truncated: stream-id/);
    assert.throws(() => new WireReader(Buffer.alloc(64, 0xff)).varintUpTo(1000, 'length'), /above the limit 1000/);
  });
});

// --- frames --------------------------------------------------------------------------------------

describe('frames', () => {
  test('a NOTIFY with a binary argument has the documented layout', () => {
    const bytesOut = encodeFrame({
      type: 'notify',
      flags: FLAG_FIN,
      streamId: 1n,
      frameId: 2n,
      messages: [{ name: 'm', args: [{ name: 'c', value: { type: 'binary', value: Buffer.from([0xaa]) } }] }],
    });
    assert.equal(
      bytesOut.toString('hex'),
      // len=15 | type 3 | flags FIN | sid 1 | fid 2 | "m" | 1 arg | "c" | BIN(9) len 1 0xaa
      '0000000f' + '03' + '00000001' + '01' + '02' + '016d' + '01' + '0163' + '09' + '01' + 'aa',
    );
  });

  test('booleans carry the value in the high nibble (0x11 = true)', () => {
    const enc = encodeFrame({ type: 'agent-hello', flags: 1, streamId: 0n, frameId: 0n, items: [{ name: 'b', value: { type: 'bool', value: true } }] });
    assert.equal(enc.at(-1), 0x11);
  });

  test('every frame type round-trips', () => {
    fc.assert(
      fc.property(frame, (f) => {
        const enc = encodeFrame(f);
        assert.equal(enc.readUInt32BE(0), enc.length - 4);
        assert.deepEqual(decodeFrame(enc.subarray(4)), f);
      }),
      { numRuns: 3000 },
    );
  });

  test('a stream of frames cut anywhere is reassembled', () => {
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
        const all = Buffer.concat(frames.map(encodeFrame));
        const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
        const splitter = new FrameSplitter(1 << 20);
        const got: Frame[] = [];
        let prev = 0;
        for (const p of [...points, all.length]) {
          got.push(...splitter.push(all.subarray(prev, p)).map(decodeFrame));
          prev = p;
        }
        assert.deepEqual(got, frames);
        assert.equal(splitter.pendingBytes, 0);
      }),
      { numRuns: 500 },
    );
  });

  test('a frame longer than max-frame-size is refused before buffering (status 3)', () => {
    const splitter = new FrameSplitter(256);
    assert.throws(
      () => splitter.push(Buffer.from([0, 0, 1, 1])),
      (e) => e instanceof SpopFrameError && e.status === SPOP_STATUS.TOO_BIG && e.code === 'SPOP_FRAME_INVALID' && /257 bytes/.test(e.message),
    );
  });

  const malformed: Array<[string, number[], RegExp]> = [
    ['an empty frame', [], /frame type/],
    ['truncated flags', [3, 0, 0], /frame flags/],
    ['a missing frame-id', [3, 0, 0, 0, 1, 0], /frame-id/],
    ['an unknown data type', [1, 0, 0, 0, 1, 0, 0, 1, 0x61, 0x0a], /unknown data type 10/],
    ['a string longer than the frame', [1, 0, 0, 0, 1, 0, 0, 5, 0x61], /key length at offset 7 is 5, above the limit/],
    ['invalid UTF-8 in a key', [1, 0, 0, 0, 1, 0, 0, 1, 0xff, 0x00], /not valid UTF-8/],
    ['an int32 out of range', [1, 0, 0, 0, 1, 0, 0, 1, 0x61, 0x02, ...varintBytes(2n ** 31n)], /int32 value .* out of range/],
    ['a NOTIFY argument count beyond the frame', [3, 0, 0, 0, 1, 1, 1, 1, 0x6d, 2], /argument 0 name/],
    ['an ACK action of unknown type', [103, 0, 0, 0, 1, 1, 1, 7, 3, 0], /type 7 with 3 argument/],
    ['an ACK with scope 9', [103, 0, 0, 0, 1, 1, 1, 1, 3, 9], /scope 9/],
  ];
  for (const [what, raw, message] of malformed) {
    test(`rejects ${what} with SPOP_FRAME_INVALID`, () => {
      assert.throws(
        () => decodeFrame(Buffer.from(raw)),
        (e) => isHaproxyConnectError(e, 'SPOP_FRAME_INVALID') && message.test(e.message),
      );
    });
  }
});

// --- fuzzing -------------------------------------------------------------------------------------

describe('fuzzing', () => {
  test('any byte string decodes or throws SPOP_FRAME_INVALID', () => {
    fc.assert(
      fc.property(bytes(0, 400), (raw) => {
        assertTypedError(() => decodeFrame(raw));
        assertTypedError(() => decodeStream(raw, MAX_FRAME));
      }),
      { numRuns: 5000 },
    );
  });

  test(`${FUZZ_FRAMES} mutated valid frames decode or throw the typed error, in bounded time`, () => {
    const samples = fc.sample(frame, 500).map((f) => encodeFrame(f));
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      // xorshift32: deterministic, so a failure reproduces.
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const started = Date.now();
    let decoded = 0;
    let rejected = 0;
    for (let i = 0; i < FUZZ_FRAMES; i++) {
      const buf = Buffer.from(samples[rand(samples.length)] as Buffer);
      const mutations = 1 + rand(4);
      for (let m = 0; m < mutations; m++) {
        const op = rand(3);
        if (op === 0 && buf.length > 0) buf[rand(buf.length)] = rand(256);
        else if (op === 1 && buf.length > 4) {
          const at = 4 + rand(Math.min(12, buf.length - 4));
          buf[at] = (buf[at] as number) ^ (1 << rand(8));
        } else if (buf.length > 0) buf[rand(buf.length)] = [0x00, 0x7f, 0x80, 0xef, 0xf0, 0xff][rand(6)] as number;
      }
      const cut = rand(5) === 0 ? buf.subarray(0, rand(buf.length + 1)) : buf;
      try {
        decodeStream(cut, MAX_FRAME);
        decoded++;
      } catch (err) {
        assert.ok(isHaproxyConnectError(err, 'SPOP_FRAME_INVALID'), `mutant ${i}: ${String(err)}`);
        rejected++;
      }
    }
    const elapsed = Date.now() - started;
    assert.equal(decoded + rejected, FUZZ_FRAMES);
    assert.ok(elapsed < FUZZ_BUDGET_MS, `fuzzing took ${elapsed} ms`);
    assert.ok(rejected > 0 && decoded > 0, `decoded ${decoded}, rejected ${rejected}`);
  });
});
