/**
 * The HTTP transport to the local Consul agent: address parsing, a dedicated keep-alive agent (never
 * Node's global one), the ACL token header, per-request timeouts and the mapping of failures to
 * stable error codes. It knows nothing about individual endpoints.
 */
import { readFileSync } from 'node:fs';
import type { Agent } from 'node:http';
import { http, https } from '../builtins.js';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { exchange } from '../http-exchange.js';

/** Consul's default blocking wait (5 min); its maximum is 10 min. */
export const DEFAULT_WAIT_SECONDS = 300;
export const MAX_WAIT_SECONDS = 600;
/** Consul adds up to wait/16 of random jitter to a blocking wait. */
const WAIT_JITTER_DIVISOR = 16;
/** Slack on top of wait + jitter before we declare a blocking request lost. */
const BLOCKING_MARGIN_MS = 15_000;
/** Timeout of requests that do not block (agent/self, prepared queries...). */
export const NON_BLOCKING_TIMEOUT_MS = 30_000;
/** The socket's own inactivity limit sits above ours so that our clearer timeout error fires first. */
const SOCKET_TIMEOUT_SLACK_MS = 10_000;
/** An idle pooled connection closes after this long (a watch's first, non-blocking, request leaves one behind). */
const FREE_SOCKET_MS = 4_000;
/** How much of an error body goes into an error message. */
const BODY_EXCERPT_CHARS = 300;

export interface ConsulTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Verify the agent's certificate (false only for tests and lab setups). */
  verify: boolean;
}

export interface ConsulClientOptions {
  /** 'http://h:p', 'https://h:p', 'unix:///path', or a bare 'host:port' (http), like CONSUL_HTTP_ADDR. */
  address: string;
  token?: string;
  tls?: ConsulTlsOptions;
  /** Blocking wait in seconds, default 300 (Consul's maximum is 600). */
  waitSeconds?: number;
}

export interface ConsulAddress {
  /** Where requests go: a host (brackets of an IPv6 literal removed) and port, or a unix socket. */
  peer: { host: string; port: number } | { socketPath: string };
  /** HTTPS (never over a unix socket). */
  tls: boolean;
  /** Readable form for error messages, e.g. `http://127.0.0.1:8500` or `unix:///run/consul.sock`. */
  display: string;
}

/** Parses a Consul address the way Consul's CLI reads CONSUL_HTTP_ADDR. */
export function parseConsulAddress(address: string): ConsulAddress {
  const trimmed = address.trim();
  if (trimmed.startsWith('unix://')) {
    const socketPath = trimmed.slice('unix://'.length);
    if (socketPath === '') {
      throw new HaproxyConnectError('CONFIG_INVALID', `Consul address '${address}' has an empty unix socket path`);
    }
    return { peer: { socketPath }, tls: false, display: trimmed };
  }
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new HaproxyConnectError('CONFIG_INVALID', `Consul address '${address}' is not a valid address`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new HaproxyConnectError('CONFIG_INVALID', `Consul address '${address}' has scheme '${url.protocol.slice(0, -1)}'; use http, https or unix`);
  }
  if (url.hostname === '' || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new HaproxyConnectError('CONFIG_INVALID', `Consul address '${address}' must be scheme://host:port only`);
  }
  if (url.pathname !== '/' && url.pathname !== '') {
    throw new HaproxyConnectError('CONFIG_INVALID', `Consul address '${address}' must not have a path`);
  }
  const tls = url.protocol === 'https:';
  return { peer: { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || (tls ? 443 : 80)) }, tls, display: url.origin };
}

export interface ConsulResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface GetOptions {
  signal: AbortSignal;
  /** True for blocking queries: the timeout then covers the wait and Consul's jitter. */
  blocking: boolean;
  /** Lets the caller turn a 404 into a domain error (e.g. SIDECAR_NOT_FOUND). */
  onNotFound?: () => Error;
  /** A 404 is answered like a success (the caller reads its status and X-Consul-Index): an absent config entry. */
  allowNotFound?: boolean;
}

function readFileOption(what: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new HaproxyConnectError('CONFIG_INVALID', `Cannot read Consul TLS ${what} '${file}': ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** The first line of an error's cause chain that says something, with the socket error's code. */
function describeCause(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    const text = typeof code === 'string' && !current.message.includes(code) ? `${code} ${current.message}` : current.message;
    if (text !== '' && !parts.includes(text)) parts.push(text);
    current = current.cause;
  }
  return parts.length > 0 ? parts.join(': ') : errorMessage(err);
}

export class ConsulHttp {
  readonly address: string;
  readonly waitSeconds: number;
  readonly #token: string | undefined;
  readonly #agent: Agent;
  readonly #tls: boolean;
  readonly #peer: ConsulAddress['peer'];
  readonly #blockingTimeoutMs: number;
  readonly #socketTimeoutMs: number;

  constructor(options: ConsulClientOptions) {
    const parsed = parseConsulAddress(options.address);
    const wait = options.waitSeconds ?? DEFAULT_WAIT_SECONDS;
    if (!Number.isInteger(wait) || wait < 1 || wait > MAX_WAIT_SECONDS) {
      throw new HaproxyConnectError('CONFIG_INVALID', `Consul blocking wait ${String(wait)}s is out of range (1..${MAX_WAIT_SECONDS} whole seconds)`);
    }
    this.address = parsed.display;
    this.waitSeconds = wait;
    this.#token = options.token === '' ? undefined : options.token;
    this.#blockingTimeoutMs = wait * 1000 + (wait * 1000) / WAIT_JITTER_DIVISOR + BLOCKING_MARGIN_MS;
    this.#socketTimeoutMs = Math.max(this.#blockingTimeoutMs, NON_BLOCKING_TIMEOUT_MS) + SOCKET_TIMEOUT_SLACK_MS;
    this.#tls = parsed.tls;
    this.#peer = parsed.peer;
    // One keep-alive pool for this agent: every watch holds a blocking query on its own connection.
    const tls = options.tls;
    this.#agent = this.#tls
      ? new (https().Agent)({
          keepAlive: true,
          timeout: FREE_SOCKET_MS,
          ...(tls?.caFile !== undefined && { ca: readFileOption('CA file', tls.caFile) }),
          ...(tls?.certFile !== undefined && { cert: readFileOption('certificate file', tls.certFile) }),
          ...(tls?.keyFile !== undefined && { key: readFileOption('key file', tls.keyFile) }),
          rejectUnauthorized: tls?.verify ?? true,
        })
      : new http.Agent({ keepAlive: true, timeout: FREE_SOCKET_MS });
  }

  /**
   * GET `path` with the query string `query` (already encoded). Returns the response of a 2xx;
   * throws CONSUL_UNREACHABLE, CONSUL_FORBIDDEN or CONSUL_HTTP otherwise. When `signal` aborts,
   * rejects with the signal's reason.
   */
  get(path: string, query: string, options: GetOptions): Promise<ConsulResponse> {
    return this.#send('GET', path, query, options, undefined);
  }

  /** PUT `path` with a JSON body (or none): the same timeouts and error mapping as a non-blocking GET. */
  put(path: string, body: unknown, options: Omit<GetOptions, 'blocking'>): Promise<ConsulResponse> {
    return this.#send('PUT', path, '', { ...options, blocking: false }, body === undefined ? undefined : JSON.stringify(body));
  }

  /** POST `path` with a JSON body; blocking like a GET when `options.blocking` (the discovery chain is read by POST). */
  post(path: string, query: string, body: unknown, options: GetOptions): Promise<ConsulResponse> {
    return this.#send('POST', path, query, options, JSON.stringify(body));
  }

  async #send(method: 'GET' | 'PUT' | 'POST', path: string, query: string, options: GetOptions, payload: string | undefined): Promise<ConsulResponse> {
    const { signal } = options;
    signal.throwIfAborted();
    const timeoutMs = options.blocking ? this.#blockingTimeoutMs : NON_BLOCKING_TIMEOUT_MS;
    // One controller per request, linked to the caller's signal by a listener removed in finally,
    // and a timer that is always cleared: AbortSignal.any/timeout in a loop leaks on Node 20.
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);

    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    if (this.#token !== undefined) headers['x-consul-token'] = this.#token;

    let response: ConsulResponse;
    try {
      const res = await exchange({
        agent: this.#agent,
        tls: this.#tls,
        ...this.#peer,
        method,
        path: `${path}${query === '' ? '' : `?${query}`}`,
        headers,
        signal: controller.signal,
        idleTimeoutMs: this.#socketTimeoutMs,
        ...(payload !== undefined && { body: payload }),
      });
      response = { status: res.status, headers: res.headers, body: res.body };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (timedOut) {
        throw new HaproxyConnectError('CONSUL_UNREACHABLE', `Consul agent at ${this.address} did not answer ${method} ${path} within ${timeoutMs} ms`, { cause: err });
      }
      throw new HaproxyConnectError('CONSUL_UNREACHABLE', `Cannot reach Consul agent at ${this.address}: ${describeCause(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }

    if ((response.status >= 200 && response.status < 300) || (response.status === 404 && options.allowNotFound === true)) return response;
    const excerpt = this.#excerpt(response.body);
    if (response.status === 403) {
      throw new HaproxyConnectError('CONSUL_FORBIDDEN', `Consul agent at ${this.address} rejected the ACL token for ${method} ${path} (403): ${excerpt}`);
    }
    if (response.status === 404 && options.onNotFound !== undefined) throw options.onNotFound();
    // 429: the agent allows limits.http_max_conns_per_client (default 200) connections per client
    // address, shared by every sidecar on the node; each holds one blocking query per upstream.
    const hint =
      response.status === 429
        ? " (too many connections from this address: every sidecar on the node holds one blocking query per upstream and per target, plus four or five; raise the agent's limits.http_max_conns_per_client, default 200)"
        : '';
    throw new HaproxyConnectError('CONSUL_HTTP', `Consul agent at ${this.address} answered ${method} ${path} with HTTP ${response.status}: ${excerpt}${hint}`);
  }

  #excerpt(body: string): string {
    let text = body.trim().replace(/\s+/g, ' ');
    // Consul does not echo the token, but never let a secret into an error message.
    if (this.#token !== undefined && this.#token.length > 0) text = text.split(this.#token).join('[redacted]');
    if (text === '') return '(empty body)';
    return text.length > BODY_EXCERPT_CHARS ? `${text.slice(0, BODY_EXCERPT_CHARS)}...` : text;
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }
}
