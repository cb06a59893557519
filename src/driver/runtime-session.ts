/**
 * The HAProxy runtime API transport (the admin `stats socket`): one session in interactive mode
 * (`prompt`) carries any number of commands, pipelined, each answer read up to the next `> ` prompt.
 * What goes over it: runtime-apply.ts (planner ops), sessions.ts (closing connections), and the
 * drift check's reads (parsed by src/haproxy/runtime-state.ts, which is pure).
 *
 * Measured on 2.6.12: after `prompt` every answer ends with a prompt `> ` at the start of a line.
 * Most answers end with an empty line first, but not all ("Server deleted.\n> " has none), so
 * the prompt is the delimiter. A payload line is answered with a `+ ` continuation prompt
 * (without newline) before the command's own answer.
 */
import net from 'node:net';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { commandText, isExpected, type RuntimeCommand } from '../haproxy/runtime-ops.js';
/** Bound for one answer; a slow answer means a wedged session, which is then closed. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2_000;
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
    // Not awaited: `prompt` leaves with the first command, and its answer is read before that
    // command's (answers come in order). A session that fails rejects every pending command.
    session.#send('prompt\n', 'prompt').catch(() => undefined);
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
