/**
 * The HAProxy Data Plane API (v2) over its unix socket: one keep-alive agent, Basic credentials
 * generated per run, bounded waits. Answers are returned as text with their status; the caller
 * decides what a status means. Error messages never carry the password: a 401 body echoes the
 * password that was sent (measured on v2.9.27: `invalid password: <password>`), so it is not read.
 */
import { http } from '../builtins.js';
import { setTimeout as delay } from 'node:timers/promises';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { exchange } from '../http-exchange.js';

/** Every call is bounded: a reload behind `force_reload` on a large configuration takes seconds. */
export const DATAPLANE_REQUEST_TIMEOUT_MS = 30_000;
export const DATAPLANE_BASE_PATH = '/v2';
/** A runtime call answered "retry" is sent again this often, this far apart (10 s in all). */
const RUNTIME_RETRIES = 100;
const RUNTIME_RETRY_MS = 100;

export interface DataplaneRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Under the base path, e.g. `/services/haproxy/runtime/servers`. */
  path: string;
  query?: Record<string, string>;
  /** A JSON value (sent as application/json) or text with its content type. */
  body?: { json: unknown } | { text: string; contentType: string };
}

export interface DataplaneAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One request and its answer, as the recorder (tests) sees them. */
export interface DataplaneExchange {
  request: { method: string; path: string; query: Record<string, string>; contentType?: string; body?: string };
  response: { status: number; body: string };
}

export interface DataplaneClientOptions {
  socketPath: string;
  user: string;
  password: string;
  timeoutMs?: number;
  /** Sees every exchange (recordings in tests). */
  onExchange?: (exchange: DataplaneExchange) => void;
}

export class DataplaneClient {
  readonly #opts: DataplaneClientOptions;
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  readonly #authorization: string;

  constructor(opts: DataplaneClientOptions) {
    this.#opts = opts;
    this.#authorization = `Basic ${Buffer.from(`${opts.user}:${opts.password}`).toString('base64')}`;
  }

  get socketPath(): string {
    return this.#opts.socketPath;
  }

  close(): void {
    this.#agent.destroy();
  }

  /** Sends one request; throws DATAPLANE_API when the socket fails or the answer is 401. */
  async send(req: DataplaneRequest, signal?: AbortSignal): Promise<DataplaneAnswer> {
    const query = new URLSearchParams(req.query ?? {}).toString();
    const path = `${DATAPLANE_BASE_PATH}${req.path}${query === '' ? '' : `?${query}`}`;
    let payload: string | undefined;
    let contentType: string | undefined;
    if (req.body !== undefined) {
      if ('json' in req.body) {
        payload = JSON.stringify(req.body.json);
        contentType = 'application/json';
      } else {
        payload = req.body.text;
        contentType = req.body.contentType;
      }
    }
    let answer = await this.#roundTrip(req.method, path, payload, contentType, signal);
    // While the API (re)connects to HAProxy's runtime socket it answers runtime calls with 500
    // "retry - unable to configure runtime client" (measured on v2.9.27 right after its start).
    for (let attempt = 0; answer.status === 500 && /^\{?.*"message":"retry\b/.test(answer.body) && attempt < RUNTIME_RETRIES; attempt++) {
      await delay(RUNTIME_RETRY_MS, undefined, signal === undefined ? undefined : { signal });
      answer = await this.#roundTrip(req.method, path, payload, contentType, signal);
    }
    if (answer.status === 401) {
      // The body is the password echoed back: never read into a message or a log.
      throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API at ${this.#opts.socketPath} refused haproxy-connect's credentials (401) for ${req.method} ${req.path}`);
    }
    this.#opts.onExchange?.({
      request: { method: req.method, path: req.path, query: { ...(req.query ?? {}) }, ...(contentType !== undefined && { contentType }), ...(payload !== undefined && { body: payload }) },
      response: { status: answer.status, body: answer.body },
    });
    return answer;
  }

  /** Sends and expects one of `ok`; otherwise throws DATAPLANE_API naming the request and the API's message. */
  async expect(req: DataplaneRequest, ok: readonly number[], what: string, signal?: AbortSignal): Promise<DataplaneAnswer> {
    const answer = await this.send(req, signal);
    if (!ok.includes(answer.status)) {
      throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused to ${what} (${req.method} ${req.path}): ${answer.status} ${this.apiMessage(answer)}`);
    }
    return answer;
  }

  /** The API's `message` field, without the password should it ever appear, bounded in length. */
  apiMessage(answer: DataplaneAnswer): string {
    let message = answer.body;
    try {
      const parsed: unknown = JSON.parse(answer.body);
      if (parsed !== null && typeof parsed === 'object' && 'message' in parsed && typeof parsed.message === 'string') message = parsed.message;
    } catch {
      // not JSON: the text itself
    }
    if (this.#opts.password !== '') message = message.split(this.#opts.password).join('***');
    return message.length > 2_000 ? `${message.slice(0, 2_000)}…` : message;
  }

  async #roundTrip(method: string, path: string, payload: string | undefined, contentType: string | undefined, signal?: AbortSignal): Promise<DataplaneAnswer> {
    const headers: Record<string, string> = { authorization: this.#authorization, accept: 'application/json' };
    if (payload !== undefined && contentType !== undefined) headers['content-type'] = contentType;
    try {
      const res = await exchange({
        agent: this.#agent,
        tls: false,
        socketPath: this.#opts.socketPath,
        method,
        path,
        headers,
        idleTimeoutMs: this.#opts.timeoutMs ?? DATAPLANE_REQUEST_TIMEOUT_MS,
        ...(payload !== undefined && { body: payload }),
        ...(signal !== undefined && { signal }),
      });
      const flat: Record<string, string> = {};
      for (const [key, value] of Object.entries(res.headers)) if (typeof value === 'string') flat[key] = value;
      return { status: res.status, headers: flat, body: res.body };
    } catch (err) {
      throw new HaproxyConnectError('DATAPLANE_API', `Cannot reach the Data Plane API at ${this.#opts.socketPath} for ${method} ${path}: ${errorMessage(err)}`, { cause: err });
    }
  }
}
