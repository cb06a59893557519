/**
 * A sequential keep-alive HTTP probe against a local listener: one request after another, as fast
 * as they complete, recording who answered. Its resolution is one request (well under 1 ms here).
 */
import { Agent, request } from 'node:http';

const REQUEST_TIMEOUT_MS = 2_000;

export interface ProbeAnswer {
  body: string | undefined;
  /** `performance.now()` when the answer (or failure) arrived. */
  at: number;
}

export interface ProbeReply {
  /** The HTTP status; undefined when no response came. */
  status: number | undefined;
  body: string | undefined;
  /** `performance.now()` when the answer (or failure) arrived. */
  at: number;
  /** Why no response came (`socket hang up`, `read ECONNRESET`, `timeout`, ...). */
  error?: string;
}

export class Probe {
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 1 });
  readonly #port: number;
  requests = 0;
  failed = 0;

  constructor(port: number) {
    this.#port = port;
  }

  /** One GET of `path` (default `/`); `body` is undefined when the request failed or was not a 200 (counted in `failed`). */
  async get(path = '/'): Promise<ProbeAnswer> {
    const reply = await this.ask(path);
    if (reply.status === 200) return { body: reply.body, at: reply.at };
    this.failed++;
    return { body: undefined, at: reply.at };
  }

  /**
   * One GET of `path`, whatever its status: a 403 is an answer here (L7 intentions). `status` is
   * undefined when no response came (error, timeout). Counted in `requests`, never in `failed`.
   */
  ask(path: string): Promise<ProbeReply> {
    this.requests++;
    return new Promise((resolve) => {
      const fail = (err?: Error): void => resolve({ status: undefined, body: undefined, at: performance.now(), ...(err !== undefined && { error: err.message }) });
      const req = request({ host: '127.0.0.1', port: this.#port, path, agent: this.#agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode, body, at: performance.now() }));
        res.on('error', fail);
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', fail);
      req.end();
    });
  }

  /** Requests until `accept(body)` holds, or throws after `timeoutMs`. Returns the accepting answer. */
  async until(what: string, accept: (body: string) => boolean, timeoutMs: number): Promise<ProbeAnswer> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const answer = await this.get();
      if (answer.body !== undefined && accept(answer.body)) return answer;
      if (answer.body === undefined) await new Promise((r) => setTimeout(r, 1)); // do not spin on a refused port
    }
    throw new Error(`probe on port ${this.#port}: timed out after ${timeoutMs} ms waiting for ${what}`);
  }

  /** Requests until one fails (a refusal), or throws after `timeoutMs`. Returns the failed answer. */
  async untilRefused(what: string, timeoutMs: number): Promise<ProbeAnswer> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const answer = await this.get();
      if (answer.body === undefined) return answer;
    }
    throw new Error(`probe on port ${this.#port}: timed out after ${timeoutMs} ms waiting for ${what}`);
  }

  /** `count` requests; returns how many were answered with 200. */
  async served(count: number): Promise<number> {
    let ok = 0;
    for (let i = 0; i < count; i++) {
      if ((await this.get()).body !== undefined) ok++;
      else await new Promise((r) => setTimeout(r, 1));
    }
    return ok;
  }

  close(): void {
    this.#agent.destroy();
  }
}
