/**
 * SPOP 2.0 frame codec (SPOE.txt §3): frames <-> bytes, both directions, so the agent and the
 * tests' fake HAProxy share one implementation. Decoding never trusts a length: every malformed
 * input throws SpopFrameError (code SPOP_FRAME_INVALID) naming what was wrong and where.
 */
import { FRAME_TYPE, SPOP_STATUS, SpopFrameError, VAR_SCOPES, type Frame, type KvPair, type SpoeAction, type SpoeMessage, type TypedData, type VarScope } from './types.js';
import { MAX_UINT32, WireReader, WireWriter } from './wire.js';

/** SPOE.txt §3.2: peers must accept frames of at least 256 bytes. */
export const MIN_FRAME_SIZE = 256;
/** <FRAME-LENGTH:4 bytes> before every frame. */
export const LENGTH_PREFIX_BYTES = 4;

// Typed data: the type in the low nibble, flags in the high nibble (HAProxy's SPOE_DATA_T_MASK 0x0F,
// SPOE_DATA_FL_TRUE 0x10), although SPOE.txt draws them the other way round.
const DATA_TYPE_MASK = 0x0f;
const DATA_FLAG_TRUE = 0x10;
const DATA_TYPE_ID = {
  null: 0,
  bool: 1,
  int32: 2,
  uint32: 3,
  int64: 4,
  uint64: 5,
  ipv4: 6,
  ipv6: 7,
  string: 8,
  binary: 9,
} as const;
const IPV4_BYTES = 4;
const IPV6_BYTES = 16;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

const ACTION_SET_VAR = 1;
const ACTION_UNSET_VAR = 2;
const SET_VAR_ARGS = 3;
const UNSET_VAR_ARGS = 2;
/** NB-ARGS is one byte. */
const MAX_ARGS = 255;

const KNOWN_TYPE_BY_ID = new Map<number, Frame['type']>([
  [FRAME_TYPE.UNSET, 'unset'],
  [FRAME_TYPE.HAPROXY_HELLO, 'haproxy-hello'],
  [FRAME_TYPE.HAPROXY_DISCONNECT, 'haproxy-disconnect'],
  [FRAME_TYPE.NOTIFY, 'notify'],
  [FRAME_TYPE.AGENT_HELLO, 'agent-hello'],
  [FRAME_TYPE.AGENT_DISCONNECT, 'agent-disconnect'],
  [FRAME_TYPE.ACK, 'ack'],
]);

const TYPE_ID_BY_KIND: Record<Exclude<Frame['type'], 'unknown'>, number> = {
  unset: FRAME_TYPE.UNSET,
  'haproxy-hello': FRAME_TYPE.HAPROXY_HELLO,
  'haproxy-disconnect': FRAME_TYPE.HAPROXY_DISCONNECT,
  notify: FRAME_TYPE.NOTIFY,
  'agent-hello': FRAME_TYPE.AGENT_HELLO,
  'agent-disconnect': FRAME_TYPE.AGENT_DISCONNECT,
  ack: FRAME_TYPE.ACK,
};

// --- decoding ------------------------------------------------------------------------------------

function decodeTypedData(r: WireReader, what: string): TypedData {
  const at = r.offset;
  const tag = r.u8(`${what} type`);
  const typeId = tag & DATA_TYPE_MASK;
  switch (typeId) {
    case DATA_TYPE_ID.null:
      return { type: 'null' };
    case DATA_TYPE_ID.bool:
      return { type: 'bool', value: (tag & DATA_FLAG_TRUE) !== 0 };
    case DATA_TYPE_ID.int32: {
      // Signed values travel as the 64-bit two's complement (HAProxy encodes its sint that way).
      const v = BigInt.asIntN(64, r.varint(`${what} int32`));
      if (v < BigInt(INT32_MIN) || v > BigInt(INT32_MAX)) {
        throw new SpopFrameError(`SPOP ${what} at offset ${at}: int32 value ${v} is out of range`);
      }
      return { type: 'int32', value: Number(v) };
    }
    case DATA_TYPE_ID.uint32:
      return { type: 'uint32', value: r.varintUpTo(MAX_UINT32, `${what} uint32`) };
    case DATA_TYPE_ID.int64:
      return { type: 'int64', value: BigInt.asIntN(64, r.varint(`${what} int64`)) };
    case DATA_TYPE_ID.uint64:
      return { type: 'uint64', value: r.varint(`${what} uint64`) };
    case DATA_TYPE_ID.ipv4:
      return { type: 'ipv4', value: r.bytes(IPV4_BYTES, `${what} ipv4`) };
    case DATA_TYPE_ID.ipv6:
      return { type: 'ipv6', value: r.bytes(IPV6_BYTES, `${what} ipv6`) };
    case DATA_TYPE_ID.string:
      return { type: 'string', value: r.string(`${what} string`) };
    case DATA_TYPE_ID.binary:
      return { type: 'binary', value: r.lengthPrefixed(`${what} binary`) };
    default:
      throw new SpopFrameError(`SPOP ${what} at offset ${at} has unknown data type ${typeId} (byte 0x${tag.toString(16)})`);
  }
}

function decodeKvList(r: WireReader, what: string): KvPair[] {
  const items: KvPair[] = [];
  while (r.remaining > 0) {
    const name = r.string(`${what} key`);
    items.push({ name, value: decodeTypedData(r, `${what} value of '${name}'`) });
  }
  return items;
}

function decodeMessages(r: WireReader): SpoeMessage[] {
  const messages: SpoeMessage[] = [];
  while (r.remaining > 0) {
    const name = r.string('message name');
    const nbArgs = r.u8(`argument count of message '${name}'`);
    const args: KvPair[] = [];
    for (let i = 0; i < nbArgs; i++) {
      const argName = r.string(`argument ${i} name of message '${name}'`);
      args.push({ name: argName, value: decodeTypedData(r, `argument '${argName}' of message '${name}'`) });
    }
    messages.push({ name, args });
  }
  return messages;
}

function decodeScope(r: WireReader): VarScope {
  const at = r.offset;
  const id = r.u8('variable scope');
  const scope = VAR_SCOPES[id];
  if (scope === undefined) throw new SpopFrameError(`SPOP variable scope ${id} at offset ${at} is unknown (0..4)`);
  return scope;
}

function decodeActions(r: WireReader): SpoeAction[] {
  const actions: SpoeAction[] = [];
  while (r.remaining > 0) {
    const at = r.offset;
    const type = r.u8('action type');
    const nbArgs = r.u8('action argument count');
    if (type === ACTION_SET_VAR && nbArgs === SET_VAR_ARGS) {
      const scope = decodeScope(r);
      const name = r.string('variable name');
      actions.push({ type: 'set-var', scope, name, value: decodeTypedData(r, `value of variable '${name}'`) });
    } else if (type === ACTION_UNSET_VAR && nbArgs === UNSET_VAR_ARGS) {
      const scope = decodeScope(r);
      actions.push({ type: 'unset-var', scope, name: r.string('variable name') });
    } else {
      throw new SpopFrameError(`SPOP action at offset ${at}: type ${type} with ${nbArgs} argument(s) is not set-var/3 or unset-var/2`);
    }
  }
  return actions;
}

/** Decodes one frame's bytes (without the 4-byte length prefix). */
export function decodeFrame(body: Buffer): Frame {
  const r = new WireReader(body);
  const typeId = r.u8('frame type');
  const flags = r.u32be('frame flags');
  const streamId = r.varint('stream-id');
  const frameId = r.varint('frame-id');
  const kind = KNOWN_TYPE_BY_ID.get(typeId);
  switch (kind) {
    case 'haproxy-hello':
    case 'haproxy-disconnect':
    case 'agent-hello':
    case 'agent-disconnect':
      return { type: kind, flags, streamId, frameId, items: decodeKvList(r, kind) };
    case 'notify':
      return { type: kind, flags, streamId, frameId, messages: decodeMessages(r) };
    case 'ack':
      return { type: kind, flags, streamId, frameId, actions: decodeActions(r) };
    case 'unset':
      return { type: kind, flags, streamId, frameId, payload: r.rest() };
    case 'unknown':
    case undefined:
      return { type: 'unknown', frameType: typeId, flags, streamId, frameId, payload: r.rest() };
  }
}

// --- encoding ------------------------------------------------------------------------------------

function invalidValue(message: string): SpopFrameError {
  return new SpopFrameError(`cannot encode SPOP frame: ${message}`, SPOP_STATUS.UNKNOWN);
}

function encodeTypedData(w: WireWriter, d: TypedData): void {
  switch (d.type) {
    case 'null':
      w.u8(DATA_TYPE_ID.null);
      return;
    case 'bool':
      w.u8(DATA_TYPE_ID.bool | (d.value ? DATA_FLAG_TRUE : 0));
      return;
    case 'int32':
      if (!Number.isInteger(d.value) || d.value < INT32_MIN || d.value > INT32_MAX) throw invalidValue(`int32 ${d.value} out of range`);
      w.u8(DATA_TYPE_ID.int32);
      w.varint(BigInt.asUintN(64, BigInt(d.value)));
      return;
    case 'uint32':
      if (!Number.isInteger(d.value) || d.value < 0 || d.value > MAX_UINT32) throw invalidValue(`uint32 ${d.value} out of range`);
      w.u8(DATA_TYPE_ID.uint32);
      w.varint(d.value);
      return;
    case 'int64':
      if (d.value !== BigInt.asIntN(64, d.value)) throw invalidValue(`int64 ${d.value} out of range`);
      w.u8(DATA_TYPE_ID.int64);
      w.varint(BigInt.asUintN(64, d.value));
      return;
    case 'uint64':
      w.u8(DATA_TYPE_ID.uint64);
      w.varint(d.value);
      return;
    case 'ipv4':
    case 'ipv6': {
      const size = d.type === 'ipv4' ? IPV4_BYTES : IPV6_BYTES;
      if (d.value.length !== size) throw invalidValue(`${d.type} needs ${size} bytes, got ${d.value.length}`);
      w.u8(DATA_TYPE_ID[d.type]);
      w.bytes(d.value);
      return;
    }
    case 'string':
      w.u8(DATA_TYPE_ID.string);
      w.string(d.value);
      return;
    case 'binary':
      w.u8(DATA_TYPE_ID.binary);
      w.lengthPrefixed(d.value);
      return;
  }
}

function encodeKvList(w: WireWriter, items: readonly KvPair[]): void {
  for (const item of items) {
    w.string(item.name);
    encodeTypedData(w, item.value);
  }
}

function scopeId(scope: VarScope): number {
  return VAR_SCOPES.indexOf(scope);
}

/** Encodes a frame with its 4-byte length prefix. */
export function encodeFrame(frame: Frame): Buffer {
  const w = new WireWriter();
  w.u32be(0); // patched below
  w.u8(frame.type === 'unknown' ? frame.frameType : TYPE_ID_BY_KIND[frame.type]);
  if (frame.type === 'unknown' && (KNOWN_TYPE_BY_ID.has(frame.frameType) || !Number.isInteger(frame.frameType) || frame.frameType < 0 || frame.frameType > 255)) {
    throw invalidValue(`frame type ${frame.frameType} is not an unknown one-byte type`);
  }
  w.u32be(frame.flags);
  w.varint(frame.streamId);
  w.varint(frame.frameId);
  switch (frame.type) {
    case 'haproxy-hello':
    case 'haproxy-disconnect':
    case 'agent-hello':
    case 'agent-disconnect':
      encodeKvList(w, frame.items);
      break;
    case 'notify':
      for (const m of frame.messages) {
        if (m.args.length > MAX_ARGS) throw invalidValue(`message '${m.name}' has ${m.args.length} arguments (max ${MAX_ARGS})`);
        w.string(m.name);
        w.u8(m.args.length);
        encodeKvList(w, m.args);
      }
      break;
    case 'ack':
      for (const a of frame.actions) {
        w.u8(a.type === 'set-var' ? ACTION_SET_VAR : ACTION_UNSET_VAR);
        w.u8(a.type === 'set-var' ? SET_VAR_ARGS : UNSET_VAR_ARGS);
        w.u8(scopeId(a.scope));
        w.string(a.name);
        if (a.type === 'set-var') encodeTypedData(w, a.value);
      }
      break;
    case 'unset':
    case 'unknown':
      w.bytes(frame.payload);
      break;
  }
  w.setU32be(0, w.length - LENGTH_PREFIX_BYTES);
  return w.finish();
}

// --- stream framing ------------------------------------------------------------------------------

/**
 * Splits a byte stream into frame bodies. A length above `maxFrameSize` throws (status TOO_BIG)
 * before any of the frame is buffered, so a peer cannot make us hold more than one frame.
 */
export class FrameSplitter {
  maxFrameSize: number;
  #chunks: Buffer[] = [];
  #buffered = 0;

  constructor(maxFrameSize: number) {
    this.maxFrameSize = maxFrameSize;
  }

  /** Bytes received that do not make a whole frame yet. */
  get pendingBytes(): number {
    return this.#buffered;
  }

  push(chunk: Buffer): Buffer[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const frames: Buffer[] = [];
    let data = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks, this.#buffered);
    let pos = 0;
    while (data.length - pos >= LENGTH_PREFIX_BYTES) {
      const len = data.readUInt32BE(pos);
      if (len > this.maxFrameSize) {
        throw new SpopFrameError(`SPOP frame of ${len} bytes exceeds the max-frame-size ${this.maxFrameSize}`, SPOP_STATUS.TOO_BIG);
      }
      if (data.length - pos - LENGTH_PREFIX_BYTES < len) break;
      frames.push(data.subarray(pos + LENGTH_PREFIX_BYTES, pos + LENGTH_PREFIX_BYTES + len));
      pos += LENGTH_PREFIX_BYTES + len;
    }
    data = data.subarray(pos);
    this.#chunks = data.length > 0 ? [data] : [];
    this.#buffered = data.length;
    return frames;
  }
}

/** Decodes a whole byte stream (tests and fuzzing): every frame, or the first error. */
export function decodeStream(bytes: Buffer, maxFrameSize: number): { frames: Frame[]; trailingBytes: number } {
  const splitter = new FrameSplitter(maxFrameSize);
  const frames = splitter.push(bytes).map(decodeFrame);
  return { frames, trailingBytes: splitter.pendingBytes };
}
