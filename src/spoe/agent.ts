/**
 * The SPOE agent: a unix-socket server speaking SPOP 2.0 to HAProxy (SPOE.txt §3.2.3).
 * HAPROXY-HELLO → AGENT-HELLO (version 2.0, the smaller max-frame-size, "pipelining" when HAProxy
 * offers it); NOTIFY → `handle(messages)` → ACK with its actions; HAPROXY-DISCONNECT →
 * AGENT-DISCONNECT and close; anything out of protocol → AGENT-DISCONNECT with the SPOP status and
 * close. The decision is a synchronous pure callback, so ACKs leave in NOTIFY order on the
 * NOTIFY's own connection, which satisfies both plain and pipelined modes. Failing closed is
 * HAProxy's job: a stream whose ACK carries no verdict (or never comes) is rejected by its rules.
 */
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { FrameSplitter, MIN_FRAME_SIZE, decodeFrame, encodeFrame } from './codec.js';
import { FLAG_FIN, SPOP_STATUS, SpopFrameError, kvGet, type Frame, type KvPair, type SpoeAction, type SpoeMessage, type SpopStatus, type TypedData } from './types.js';

/** HAProxy's own default max-frame-size (tune.bufsize 16384); certificates fit in it. */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** Close connections idle for longer than HAProxy's own `timeout idle` would ever keep them. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;
/** Time allowed for the HELLO after connecting, and for the rest of a frame once it started. */
export const DEFAULT_FRAME_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_CONNECTIONS = 1_000;
/** After AGENT-DISCONNECT, how long the peer gets to close before the socket is destroyed. */
const CLOSE_GRACE_MS = 1_000;
/** Owner-only: the socket is the door to the authorization decision. */
const SOCKET_MODE = 0o600;
const SPOP_VERSION = '2.0';
const SUPPORTED_MAJOR = 2;
/** Capabilities we implement, announced only when HAProxy offers them too. */
const AGENT_CAPABILITIES = ['pipelining'] as const;
/** DISCONNECT messages are cut to stay far below the 256-byte minimum frame size. */
const MAX_DISCONNECT_MESSAGE_CHARS = 160;

export type SpoeHandler = (messages: readonly SpoeMessage[]) => SpoeAction[];

export interface SpoeAgentOptions {
  socketPath: string;
  handle: SpoeHandler;
  logger?: Logger;
  maxFrameSize?: number;
  idleTimeoutMs?: number;
  frameTimeoutMs?: number;
  maxConnections?: number;
}

export interface SpoeAgentStats {
  connections: number;
  notifies: number;
  /** Connections closed because of a protocol error or a timeout. */
  protocolErrors: number;
  /** `handle` threw: the ACK went out without actions (deny). */
  handlerErrors: number;
}

function intValue(d: TypedData | undefined): number | undefined {
  if (d === undefined) return undefined;
  if (d.type === 'int32' || d.type === 'uint32') return d.value;
  if (d.type === 'int64' || d.type === 'uint64') return d.value > BigInt(Number.MAX_SAFE_INTEGER) || d.value < 0n ? -1 : Number(d.value);
  return undefined;
}

function stringValue(d: TypedData | undefined): string | undefined {
  return d?.type === 'string' ? d.value : undefined;
}

function list(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

/** Accepts "2.0, 1.5": any announced 2.x covers 2.0 (a major implies its earlier minors). */
function supportsOurVersion(versions: string): boolean {
  return list(versions).some((v) => {
    const m = /^(\d+)\.(\d+)$/.exec(v);
    return m !== null && Number(m[1]) === SUPPORTED_MAJOR;
  });
}

interface HelloAnswer {
  items: KvPair[];
  maxFrameSize: number;
  healthcheck: boolean;
}

/** Validates a HAPROXY-HELLO and builds the AGENT-HELLO items (SPOE.txt §3.2.4–5). */
function answerHello(frame: Extract<Frame, { type: 'haproxy-hello' }>, ourMax: number): HelloAnswer {
  if (frame.streamId !== 0n || frame.frameId !== 0n) {
    throw new SpopFrameError(`HAPROXY-HELLO must have stream-id and frame-id 0, got ${frame.streamId}/${frame.frameId}`);
  }
  if ((frame.flags & FLAG_FIN) === 0) {
    throw new SpopFrameError('HAPROXY-HELLO cannot be fragmented (FIN flag missing)', SPOP_STATUS.FRAGMENTATION_NOT_SUPPORTED);
  }
  const versions = stringValue(kvGet(frame.items, 'supported-versions'));
  if (versions === undefined) throw new SpopFrameError('HAPROXY-HELLO has no supported-versions string', SPOP_STATUS.NO_VERSION);
  if (!supportsOurVersion(versions)) {
    throw new SpopFrameError(`HAPROXY-HELLO supported-versions '${versions}' does not include SPOP ${SPOP_VERSION}`, SPOP_STATUS.BAD_VERSION);
  }
  const theirMax = intValue(kvGet(frame.items, 'max-frame-size'));
  if (theirMax === undefined) throw new SpopFrameError('HAPROXY-HELLO has no integer max-frame-size', SPOP_STATUS.NO_FRAME_SIZE);
  if (theirMax < MIN_FRAME_SIZE) {
    throw new SpopFrameError(`HAPROXY-HELLO max-frame-size ${theirMax} is below the minimum ${MIN_FRAME_SIZE}`, SPOP_STATUS.BAD_FRAME_SIZE);
  }
  const capabilities = stringValue(kvGet(frame.items, 'capabilities'));
  if (capabilities === undefined) throw new SpopFrameError('HAPROXY-HELLO has no capabilities string', SPOP_STATUS.NO_CAPABILITIES);
  const offered = new Set(list(capabilities));
  const maxFrameSize = Math.min(ourMax, theirMax);
  const healthcheck = kvGet(frame.items, 'healthcheck');
  return {
    maxFrameSize,
    healthcheck: healthcheck?.type === 'bool' && healthcheck.value,
    items: [
      { name: 'version', value: { type: 'string', value: SPOP_VERSION } },
      { name: 'max-frame-size', value: { type: 'uint32', value: maxFrameSize } },
      { name: 'capabilities', value: { type: 'string', value: AGENT_CAPABILITIES.filter((c) => offered.has(c)).join(',') } },
    ],
  };
}

function disconnectFrame(status: SpopStatus, message: string): Buffer {
  return encodeFrame({
    type: 'agent-disconnect',
    flags: FLAG_FIN,
    streamId: 0n,
    frameId: 0n,
    items: [
      { name: 'status-code', value: { type: 'uint32', value: status } },
      { name: 'message', value: { type: 'string', value: message.slice(0, MAX_DISCONNECT_MESSAGE_CHARS) } },
    ],
  });
}

export class SpoeAgent {
  readonly socketPath: string;
  readonly #options: Required<Omit<SpoeAgentOptions, 'logger'>>;
  readonly #log: Logger;
  readonly #server: Server;
  readonly #connections = new Set<SpoeConnection>();
  readonly #stats = { notifies: 0, protocolErrors: 0, handlerErrors: 0 };
  #closing: Promise<void> | undefined;

  private constructor(options: SpoeAgentOptions, server: Server) {
    const maxFrameSize = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    if (!Number.isInteger(maxFrameSize) || maxFrameSize < MIN_FRAME_SIZE) {
      throw new HaproxyConnectError('CONFIG_INVALID', `SPOE max-frame-size ${maxFrameSize} is below the minimum ${MIN_FRAME_SIZE}`);
    }
    this.socketPath = options.socketPath;
    this.#options = {
      socketPath: options.socketPath,
      handle: options.handle,
      maxFrameSize,
      idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      frameTimeoutMs: options.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    };
    this.#log = options.logger ?? silentLogger();
    this.#server = server;
  }

  /** Listens on `socketPath` (which must not exist) with mode 0600. */
  static async listen(options: SpoeAgentOptions): Promise<SpoeAgent> {
    const server = createServer({ allowHalfOpen: false });
    const agent = new SpoeAgent(options, server);
    server.maxConnections = agent.#options.maxConnections;
    server.on('connection', (socket) => agent.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new HaproxyConnectError('SPOE_LISTEN_FAILED', `Cannot listen on SPOE socket '${options.socketPath}': ${err.message}`, { cause: err }));
      };
      server.once('error', onError);
      server.listen(options.socketPath, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (err) => agent.#log.error({ err: errorMessage(err) }, 'SPOE server error'));
    try {
      // The run directory is already 0700; this also holds if the socket lives elsewhere.
      await chmod(options.socketPath, SOCKET_MODE);
    } catch (err) {
      await agent.close();
      throw new HaproxyConnectError('SPOE_LISTEN_FAILED', `Cannot chmod SPOE socket '${options.socketPath}': ${errorMessage(err)}`, { cause: err });
    }
    return agent;
  }

  get stats(): SpoeAgentStats {
    return { connections: this.#connections.size, ...this.#stats };
  }

  /** Stops accepting, says AGENT-DISCONNECT (status 0) to every connection, waits for them to close. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const serverClosed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      await Promise.all([...this.#connections].map((c) => c.shutdown(SPOP_STATUS.NORMAL, 'agent is shutting down')));
      await serverClosed;
      await rm(this.socketPath, { force: true });
    })();
    return this.#closing;
  }

  #accept(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    const conn = new SpoeConnection(socket, this.#options, this.#log, {
      onNotify: () => {
        this.#stats.notifies += 1;
      },
      onProtocolError: () => {
        this.#stats.protocolErrors += 1;
      },
      onHandlerError: () => {
        this.#stats.handlerErrors += 1;
      },
    });
    this.#connections.add(conn);
    socket.once('close', () => this.#connections.delete(conn));
  }
}

interface ConnectionEvents {
  onNotify(): void;
  onProtocolError(): void;
  onHandlerError(): void;
}

/** One HAProxy connection: `hello` until the handshake, then `ready`, then `closing`. */
class SpoeConnection {
  readonly #socket: Socket;
  readonly #options: Required<Omit<SpoeAgentOptions, 'logger'>>;
  readonly #log: Logger;
  readonly #events: ConnectionEvents;
  readonly #splitter: FrameSplitter;
  #state: 'hello' | 'ready' | 'closing' = 'hello';
  #frameTimer: NodeJS.Timeout | undefined;
  #closed: Promise<void>;

  constructor(socket: Socket, options: Required<Omit<SpoeAgentOptions, 'logger'>>, log: Logger, events: ConnectionEvents) {
    this.#socket = socket;
    this.#options = options;
    this.#log = log;
    this.#events = events;
    this.#splitter = new FrameSplitter(options.maxFrameSize);
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setTimeout(options.idleTimeoutMs);
    socket.on('timeout', () => this.#fail(new SpopFrameError(`SPOE connection idle for ${options.idleTimeoutMs} ms`, SPOP_STATUS.TIMEOUT)));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => socket.resume());
    socket.on('error', (err) => this.#log.debug({ err: errorMessage(err) }, 'SPOE connection error'));
    socket.once('close', () => this.#clearFrameTimer());
    this.#armFrameTimer('HAPROXY-HELLO');
  }

  /** Sends AGENT-DISCONNECT and closes; destroys the socket if the peer does not close in time. */
  async shutdown(status: SpopStatus, message: string): Promise<void> {
    if (this.#state !== 'closing') {
      this.#state = 'closing';
      this.#clearFrameTimer();
      this.#socket.end(disconnectFrame(status, message));
    }
    const timer = setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS);
    await this.#closed;
    clearTimeout(timer);
  }

  /** A method, so TypeScript does not keep a narrowed #state across #onFrame calls. */
  #isClosing(): boolean {
    return this.#state === 'closing';
  }

  #armFrameTimer(what: string): void {
    if (this.#frameTimer !== undefined) return;
    const ms = this.#options.frameTimeoutMs;
    this.#frameTimer = setTimeout(() => {
      this.#frameTimer = undefined;
      this.#fail(new SpopFrameError(`SPOE peer did not send a complete ${what} within ${ms} ms`, SPOP_STATUS.TIMEOUT));
    }, ms);
  }

  #clearFrameTimer(): void {
    if (this.#frameTimer !== undefined) clearTimeout(this.#frameTimer);
    this.#frameTimer = undefined;
  }

  #fail(err: unknown): void {
    if (this.#state === 'closing') return;
    const status = err instanceof SpopFrameError ? err.status : SPOP_STATUS.UNKNOWN;
    this.#events.onProtocolError();
    this.#log.warn({ code: 'SPOP_FRAME_INVALID', status, err: errorMessage(err) }, 'closing SPOE connection');
    void this.shutdown(status, errorMessage(err));
  }

  #send(frame: Buffer): void {
    // Backpressure: stop reading NOTIFYs while ACKs pile up unread.
    if (!this.#socket.write(frame)) this.#socket.pause();
  }

  #onData(chunk: Buffer): void {
    if (this.#state === 'closing') return;
    // The ACKs of the frames of one chunk (pipelined NOTIFYs) leave in one write.
    this.#socket.cork();
    try {
      for (const body of this.#splitter.push(chunk)) {
        this.#onFrame(decodeFrame(body));
        if (this.#isClosing()) return;
      }
    } catch (err) {
      this.#fail(err);
      return;
    } finally {
      this.#socket.uncork();
    }
    if (this.#state === 'ready') {
      if (this.#splitter.pendingBytes > 0) this.#armFrameTimer('frame');
      else this.#clearFrameTimer();
    }
  }

  #onFrame(frame: Frame): void {
    if (frame.type === 'haproxy-disconnect') {
      const status = intValue(kvGet(frame.items, 'status-code'));
      const message = stringValue(kvGet(frame.items, 'message'));
      this.#log.debug({ status, message }, 'HAProxy closed the SPOE connection');
      void this.shutdown(SPOP_STATUS.NORMAL, 'ok');
      return;
    }
    if (this.#state === 'hello') {
      if (frame.type !== 'haproxy-hello') throw new SpopFrameError(`expected HAPROXY-HELLO, got a ${frame.type} frame`);
      const answer = answerHello(frame, this.#options.maxFrameSize);
      this.#splitter.maxFrameSize = answer.maxFrameSize;
      this.#clearFrameTimer();
      const reply = encodeFrame({ type: 'agent-hello', flags: FLAG_FIN, streamId: 0n, frameId: 0n, items: answer.items });
      if (answer.healthcheck) {
        this.#state = 'closing';
        this.#socket.end(reply);
        return;
      }
      this.#state = 'ready';
      this.#send(reply);
      return;
    }
    switch (frame.type) {
      case 'notify':
        this.#onNotify(frame);
        return;
      case 'unset':
        throw new SpopFrameError('fragmented frames are not supported by this agent', SPOP_STATUS.FRAGMENTATION_NOT_SUPPORTED);
      case 'unknown':
        return; // SPOE.txt §3.2.2: unknown frames may be skipped.
      default:
        throw new SpopFrameError(`unexpected ${frame.type} frame after the HELLO handshake`);
    }
  }

  #onNotify(frame: Extract<Frame, { type: 'notify' }>): void {
    if ((frame.flags & FLAG_FIN) === 0) {
      throw new SpopFrameError('fragmented NOTIFY frames are not supported by this agent', SPOP_STATUS.FRAGMENTATION_NOT_SUPPORTED);
    }
    this.#events.onNotify();
    let actions: SpoeAction[];
    try {
      actions = this.#options.handle(frame.messages);
    } catch (err) {
      this.#events.onHandlerError();
      this.#log.error({ err: errorMessage(err) }, 'SPOE handler failed; acknowledging without a verdict (deny)');
      actions = [];
    }
    const ack = { type: 'ack' as const, flags: FLAG_FIN, streamId: frame.streamId, frameId: frame.frameId };
    let bytes = encodeFrame({ ...ack, actions });
    if (bytes.length - 4 > this.#splitter.maxFrameSize) {
      this.#events.onHandlerError();
      this.#log.error({ bytes: bytes.length }, 'SPOE ACK exceeds max-frame-size; acknowledging without a verdict (deny)');
      bytes = encodeFrame({ ...ack, actions: [] });
    }
    this.#send(bytes);
  }
}
