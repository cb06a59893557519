/**
 * One HTTP exchange over Node's own `node:http` / `node:https`, the answer read whole as text. The
 * clients of Consul's agent, HAProxy's stats socket and the Data Plane API share it. Node's HTTP
 * parser is part of the binary; an HTTP library with its own parser in WebAssembly (undici) cost each
 * daemon about 10 MiB of resident memory.
 */
import type { Agent, IncomingHttpHeaders, RequestOptions } from 'node:http';
import { http, https } from './builtins.js';

export interface ExchangeRequest {
  /** Connection pooling and, for https, the TLS options (an https.Agent). */
  agent: Agent;
  tls: boolean;
  /** A TCP peer (`host`, `port`) or a unix socket (`socketPath`). */
  host?: string;
  port?: number;
  socketPath?: string;
  method: string;
  /** Path and query string. */
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** Aborts the exchange: the promise rejects with an AbortError (the caller reads its own signal). */
  signal?: AbortSignal;
  /** The socket's inactivity limit: the exchange fails when nothing arrives for this long. */
  idleTimeoutMs?: number;
}

export interface ExchangeAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Sends the request and resolves with the whole answer; rejects with the socket's error (its `code` kept). */
export function exchange(req: ExchangeRequest): Promise<ExchangeAnswer> {
  return new Promise((resolve, reject) => {
    const headers = { ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
    const options: RequestOptions = {
      agent: req.agent,
      method: req.method,
      path: req.path,
      headers,
      ...(req.socketPath !== undefined ? { socketPath: req.socketPath } : { host: req.host, port: req.port }),
      ...(req.signal !== undefined && { signal: req.signal }),
      ...(req.idleTimeoutMs !== undefined && { timeout: req.idleTimeoutMs }),
    };
    const request = (req.tls ? https().request : http.request)(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('close', () => {
        if (res.complete) resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
        else reject(Object.assign(new Error('the connection closed before the whole answer arrived'), { code: 'ECONNRESET' }));
      });
    });
    if (req.idleTimeoutMs !== undefined) {
      const limit = req.idleTimeoutMs;
      request.on('timeout', () => request.destroy(Object.assign(new Error(`no answer within ${limit} ms`), { code: 'ETIMEDOUT' })));
    }
    request.on('error', reject);
    request.end(req.body);
  });
}
