/**
 * The HAProxy runtime API (the admin `stats socket`): one session in interactive mode (`prompt`)
 * carries any number of commands, pipelined, each answer read up to the next `> ` prompt; then
 * applyOps() runs planner ops over it, and parsers read the live state back (drift checks).
 *
 * Measured on 2.6.12: after `prompt` every answer ends with a prompt `> ` at the start of a line.
 * Most answers end with an empty line first, but not all ("Server deleted.\n> " has none), so
 * the prompt is the delimiter. A payload line is answered with a `+ ` continuation prompt
 * (without newline) before the command's own answer.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { STILL_HAS_CONNECTIONS, commandText, describeOp, isExpected, opCommands, type RuntimeCommand, type RuntimeOp } from '../haproxy/runtime-ops.js';
import type { RuntimeOpStatus } from '../domain/haproxy.js';
import { parseShowSslCert } from '../haproxy/runtime-state.js';

/** Bound for one answer; a slow answer means a wedged session, which is then closed. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2_000;
/** Ops in flight at once. HAProxy runs a session's commands one by one; this only hides round trips. */
const PIPELINE_WINDOW = 64;
/**
 * A refused `del server` is retried this often, this far apart, then reported pending for the
 * reconciler's timer: one quick retry covers the usual ~1 ms release, and a runtime batch is never
 * held up for long by a deletion.
 */
const DELETE_RETRIES = 1;
const DELETE_RETRY_DELAY_MS = 2;
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
const PROMPT = '\n> ';

/** A command HAProxy answered with something other than the expected success text. */
export class RuntimeCommandError extends HaproxyConnectError {
  readonly command: string;
  readonly answer: string;
  constructor(command: string, answer: string) {
    super('HAPROXY_CLI', `HAProxy refused runtime command '${command}': ${JSON.stringify(answer)}`);
    this.name = 'RuntimeCommandError';
    this.command = command;
    this.answer = answer;
  }
}

export interface SessionOptions {
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  command: string;
  resolve: (answer: string) => void;
  reject: (err: Error) => void;
}

/** One interactive runtime API connection. Commands may be issued concurrently; answers come in order. */
export class RuntimeSession {
  readonly #socket: net.Socket;
  readonly #path: string;
  readonly #timeoutMs: number;
  readonly #signal: AbortSignal | undefined;
  readonly #pending: Pending[] = [];
  #buffer = '';
  #closed: Error | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #onAbort = (): void => this.#fail(new HaproxyConnectError('ABORTED', `runtime API session on ${this.#path} cancelled`, { cause: this.#signal?.reason }));

  private constructor(socket: net.Socket, path: string, options: SessionOptions) {
    this.#socket = socket;
    this.#path = path;
    this.#timeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#signal = options.signal;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime API socket ${path} failed: ${errorMessage(err)}`, { cause: err })));
    socket.on('close', () => this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime API socket ${path} closed by HAProxy`)));
  }

  /** Connects and enters interactive mode. */
  static async open(path: string, options: SessionOptions = {}): Promise<RuntimeSession> {
    if (options.signal?.aborted) throw new HaproxyConnectError('ABORTED', `runtime API session on ${path} cancelled`);
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new HaproxyConnectError('HAPROXY_CLI', `runtime API socket ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new HaproxyConnectError('HAPROXY_CLI', `Cannot connect to runtime API socket ${path}: ${errorMessage(err)}`, { cause: err }));
      });
    });
    const session = new RuntimeSession(socket, path, options);
    await session.#send('prompt\n', 'prompt');
    return session;
  }

  /** Sends a command (with an optional payload) and resolves with its answer, trimmed. */
  send(line: string, payload?: string): Promise<string> {
    if (/[\r\n]/.test(line)) return Promise.reject(new HaproxyConnectError('HAPROXY_CLI', `Refusing runtime command ${JSON.stringify(line)}: it contains a newline`));
    return this.#send(commandText({ line, payload, expect: { kind: 'empty' } }), line);
  }

  /** Runs one command and checks its answer; throws RuntimeCommandError on anything unexpected. */
  async run(cmd: RuntimeCommand): Promise<string> {
    const answer = await this.send(cmd.line, cmd.payload);
    if (!isExpected(cmd, answer)) throw new RuntimeCommandError(cmd.line, answer);
    return answer;
  }

  close(): void {
    if (this.#closed === undefined) {
      this.#socket.end('quit\n');
      this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime API session on ${this.#path} closed`));
    }
  }

  #send(text: string, command: string): Promise<string> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    return new Promise<string>((resolve, reject) => {
      this.#pending.push({ command, resolve, reject });
      if (this.#pending.length === 1) this.#arm();
      this.#socket.write(text);
    });
  }

  /** One timer for the oldest pending answer. */
  #arm(): void {
    clearTimeout(this.#timer);
    const head = this.#pending[0];
    if (head === undefined) return;
    this.#timer = setTimeout(
      () => this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime command '${head.command}' on ${this.#path} got no answer within ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    if (this.#buffer.length > MAX_ANSWER_BYTES) {
      this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime API answer on ${this.#path} exceeds ${MAX_ANSWER_BYTES} bytes`));
      return;
    }
    for (;;) {
      // The first answer (to `prompt`) is "\n> ": look for the prompt from the buffer start.
      const at = `\n${this.#buffer}`.indexOf(PROMPT);
      if (at < 0) return;
      const raw = this.#buffer.slice(0, Math.max(0, at - 1));
      this.#buffer = this.#buffer.slice(at - 1 + PROMPT.length);
      const head = this.#pending.shift();
      if (head === undefined) {
        this.#fail(new HaproxyConnectError('HAPROXY_CLI', `runtime API on ${this.#path} sent an answer nobody asked for: ${JSON.stringify(raw.slice(0, 200))}`));
        return;
      }
      head.resolve(raw.replace(/^(\+ )+/, '').replace(/\n+$/, ''));
      this.#arm();
    }
  }

  #fail(err: Error): void {
    if (this.#closed !== undefined) return;
    this.#closed = err;
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#socket.destroy();
    for (const p of this.#pending.splice(0)) p.reject(err);
  }
}

export type OpStatus = RuntimeOpStatus;

export interface OpResult {
  op: RuntimeOp;
  status: OpStatus;
  /** For `failed`: the command HAProxy refused (or the session error). */
  error: HaproxyConnectError | undefined;
}

async function applyOne(session: RuntimeSession, op: RuntimeOp): Promise<OpResult> {
  try {
    const commands = opCommands(op);
    for (const cmd of commands) {
      if (op.kind === 'remove-server' && cmd.line.startsWith('del server ')) {
        // Idle connections are released asynchronously after maintenance (measured on 2.6.12: a
        // `del server` right after `disable server` was refused, then accepted ~1 ms later; pooled
        // idle connections have also held on until the pool purge delay, and active ones until
        // they close): retry briefly, then report pending for the reconciler to retry.
        for (let attempt = 0; ; attempt += 1) {
          const answer = await session.send(cmd.line);
          if (isExpected(cmd, answer)) break;
          if (!STILL_HAS_CONNECTIONS.test(answer)) throw new RuntimeCommandError(cmd.line, answer);
          if (attempt >= DELETE_RETRIES) return { op, status: 'pending-deletion', error: new RuntimeCommandError(cmd.line, answer) };
          await delay(DELETE_RETRY_DELAY_MS);
        }
        continue;
      }
      await session.run(cmd);
    }
    if (op.kind === 'set-leaf') await verifyLeaf(session, op.path, op.pem);
    return { op, status: 'ok', error: undefined };
  } catch (err) {
    const error = err instanceof HaproxyConnectError ? err : new HaproxyConnectError('HAPROXY_CLI', `${describeOp(op)} failed: ${errorMessage(err)}`, { cause: err });
    return { op, status: 'failed', error };
  }
}

/**
 * Measured on 2.6.12: after a `commit ssl ca-file`, `show ssl cert <leaf>` says `Status: Unused`
 * and every later `commit ssl cert` prints "Success!" yet changes nothing (the bind and the
 * server lines keep the old leaf) until the next reload. So a leaf commit is only trusted when
 * HAProxy reports the new serial in use; otherwise the op fails and the caller reloads.
 */
async function verifyLeaf(session: RuntimeSession, path: string, pem: string): Promise<void> {
  const line = `show ssl cert ${path}`;
  const answer = await session.send(line);
  const live = parseShowSslCert(answer);
  const expected = new X509Certificate(pem).serialNumber.toUpperCase();
  if (live.status !== 'Used' || live.serial.toUpperCase() !== expected) {
    throw new HaproxyConnectError(
      'HAPROXY_CLI',
      `commit ssl cert ${path} reported success but HAProxy shows serial ${live.serial} with status ${live.status ?? 'unknown'} (expected ${expected}, Used); a reload is needed`,
    );
  }
}

/** TLS ops run alone, in plan order (roots before leaf: FACTS §2); server ops run pipelined. */
function isBarrier(op: RuntimeOp): boolean {
  return op.kind === 'set-leaf' || op.kind === 'append-roots';
}

/**
 * Applies ops in order over one session (or a new one on `socket`). Never throws for a refused
 * command: every op gets a result. A session error (socket closed, timeout, abort) fails the
 * ops not yet answered; the caller compares with `show servers state` or reloads.
 */
export async function applyOps(socket: string | RuntimeSession, ops: readonly RuntimeOp[], options: SessionOptions = {}): Promise<OpResult[]> {
  const owned = typeof socket === 'string';
  const session = owned ? await RuntimeSession.open(socket, options) : socket;
  const results: OpResult[] = new Array<OpResult>(ops.length);
  try {
    let i = 0;
    while (i < ops.length) {
      const op = ops[i] as RuntimeOp;
      if (isBarrier(op)) {
        results[i] = await applyOne(session, op);
        i += 1;
        continue;
      }
      let end = i;
      while (end < ops.length && !isBarrier(ops[end] as RuntimeOp)) end += 1;
      let next = i;
      const worker = async (): Promise<void> => {
        while (next < end) {
          const index = next++;
          results[index] = await applyOne(session, ops[index] as RuntimeOp);
        }
      };
      await Promise.all(Array.from({ length: Math.min(PIPELINE_WINDOW, end - i) }, worker));
      i = end;
    }
  } finally {
    if (owned) session.close();
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Reading the live state back (drift checks).
