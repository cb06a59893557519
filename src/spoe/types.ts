/**
 * SPOP 2.0 (HAProxy's Stream Processing Offload Protocol) as plain data: frames, typed data,
 * messages and actions, per /usr/share/doc/haproxy/SPOE.txt §3. The codec (codec.ts) turns these
 * into bytes and back; the agent (agent.ts) speaks the protocol.
 */
import { HaproxyConnectError } from '../errors.js';

/** Frame types (SPOE.txt §3.2.2). */
export const FRAME_TYPE = {
  UNSET: 0,
  HAPROXY_HELLO: 1,
  HAPROXY_DISCONNECT: 2,
  NOTIFY: 3,
  AGENT_HELLO: 101,
  AGENT_DISCONNECT: 102,
  ACK: 103,
} as const;

/** Frame flags (bit 0 FIN, bit 1 ABORT); other bits are reserved and carried as they are. */
export const FLAG_FIN = 0x1;
export const FLAG_ABORT = 0x2;

/** Status codes of DISCONNECT frames (SPOE.txt §3.5). */
export const SPOP_STATUS = {
  NORMAL: 0,
  IO: 1,
  TIMEOUT: 2,
  TOO_BIG: 3,
  INVALID: 4,
  NO_VERSION: 5,
  NO_FRAME_SIZE: 6,
  NO_CAPABILITIES: 7,
  BAD_VERSION: 8,
  BAD_FRAME_SIZE: 9,
  FRAGMENTATION_NOT_SUPPORTED: 10,
  INTERLACED_FRAMES: 11,
  FRAME_ID_NOT_FOUND: 12,
  RESOURCE_ALLOCATION: 13,
  UNKNOWN: 99,
} as const;

export type SpopStatus = (typeof SPOP_STATUS)[keyof typeof SPOP_STATUS];

/** Typed data (SPOE.txt §3.1). 64-bit integers are bigints; addresses and binaries are bytes. */
export type TypedData =
  | { type: 'null' }
  | { type: 'bool'; value: boolean }
  | { type: 'int32'; value: number }
  | { type: 'uint32'; value: number }
  | { type: 'int64'; value: bigint }
  | { type: 'uint64'; value: bigint }
  /** 4 bytes, network order. */
  | { type: 'ipv4'; value: Buffer }
  /** 16 bytes, network order. */
  | { type: 'ipv6'; value: Buffer }
  /** UTF-8 on the wire; invalid UTF-8 is rejected rather than silently replaced. */
  | { type: 'string'; value: string }
  | { type: 'binary'; value: Buffer };

export type TypedDataType = TypedData['type'];

export interface KvPair {
  name: string;
  value: TypedData;
}

/** One `spoe-message` of a NOTIFY frame: its name and its (possibly unnamed) arguments. */
export interface SpoeMessage {
  name: string;
  args: KvPair[];
}

export const VAR_SCOPES = ['proc', 'sess', 'txn', 'req', 'res'] as const;
export type VarScope = (typeof VAR_SCOPES)[number];

export type SpoeAction = { type: 'set-var'; scope: VarScope; name: string; value: TypedData } | { type: 'unset-var'; scope: VarScope; name: string };

interface FrameBase {
  /** FLAG_FIN / FLAG_ABORT and reserved bits, as a 32-bit unsigned number. */
  flags: number;
  /** 64-bit varints on the wire: bigints, never truncated. */
  streamId: bigint;
  frameId: bigint;
}

export type Frame =
  | (FrameBase & { type: 'haproxy-hello'; items: KvPair[] })
  | (FrameBase & { type: 'haproxy-disconnect'; items: KvPair[] })
  | (FrameBase & { type: 'notify'; messages: SpoeMessage[] })
  | (FrameBase & { type: 'agent-hello'; items: KvPair[] })
  | (FrameBase & { type: 'agent-disconnect'; items: KvPair[] })
  | (FrameBase & { type: 'ack'; actions: SpoeAction[] })
  /** A continuation fragment of a fragmented payload (type 0): kept raw. */
  | (FrameBase & { type: 'unset'; payload: Buffer })
  /** A frame type this codec does not know: the spec says it may be skipped. */
  | (FrameBase & { type: 'unknown'; frameType: number; payload: Buffer });

export type FrameKind = Frame['type'];

/**
 * A frame (or a byte stream) that does not follow SPOP. `status` is the DISCONNECT status code the
 * agent answers with (SPOE.txt §3.5); `offset` the byte offset in the frame where decoding failed.
 */
export class SpopFrameError extends HaproxyConnectError {
  readonly status: SpopStatus;
  constructor(message: string, status: SpopStatus = SPOP_STATUS.INVALID) {
    super('SPOP_FRAME_INVALID', message);
    this.name = 'SpopFrameError';
    this.status = status;
  }
}

/** Looks up a KV item by name (the first one wins, as in HAProxy). */
export function kvGet(items: readonly KvPair[], name: string): TypedData | undefined {
  for (const item of items) if (item.name === name) return item.value;
  return undefined;
}
