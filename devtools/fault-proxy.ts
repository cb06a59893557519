/**
 * An HTTP proxy in front of a real Consul agent that can turn one endpoint's answers bad on
 * demand, for fault tests: every request goes through to the agent unchanged, except those whose
 * path starts with an armed prefix, which get the agent's answer rewritten (and a moved
 * X-Consul-Index, so a blocking query returns at once). Loopback only.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type BodyRewrite = (body: Record<string, unknown>) => Record<string, unknown>;

export class ConsulFaultProxy {
  readonly #server: Server;
  readonly #target: { host: string; port: number };
  readonly #faults = new Map<string, BodyRewrite>();
  /** Requests passed through and not answered yet (blocking queries): arming answers them at once. */
  readonly #inFlight = new Set<{ req: IncomingMessage; res: ServerResponse; abort: () => void }>();
  /** Requests answered with a rewritten body, by path prefix. */
  readonly served = new Map<string, number>();

  private constructor(server: Server, target: string) {
    this.#server = server;
    const [host, port] = target.split(':') as [string, string];
    this.#target = { host, port: Number(port) };
  }

  static async start(targetHttpAddr: string): Promise<ConsulFaultProxy> {
    let proxy: ConsulFaultProxy | undefined;
    const server = createServer((req, res) => proxy?.handle(req, res));
    proxy = new ConsulFaultProxy(server, targetHttpAddr);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get httpAddr(): string {
    return `127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** From now on, answers under `pathPrefix` are rewritten by `rewrite`. */
  arm(pathPrefix: string, rewrite: BodyRewrite): void {
    this.#faults.set(pathPrefix, rewrite);
    for (const pending of [...this.#inFlight]) {
      if (!new URL(pending.req.url ?? '/', 'http://proxy').pathname.startsWith(pathPrefix)) continue;
      this.#inFlight.delete(pending);
      pending.abort();
      this.#serveFault(pending.req, pending.res, pathPrefix);
    }
  }

  disarm(pathPrefix: string): void {
    this.#faults.delete(pathPrefix);
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const prefix = [...this.#faults.keys()].find((p) => url.pathname.startsWith(p));
    if (prefix !== undefined) {
      this.#serveFault(req, res, prefix);
      return;
    }
    const pending = { req, res, abort: (): void => {} };
    this.#inFlight.add(pending);
    res.on('close', () => this.#inFlight.delete(pending));
    const out = this.#forward(req, res, req.url ?? '/', (upstream) => {
      if (!this.#inFlight.delete(pending)) return; // answered by a fault meanwhile
      res.writeHead(upstream.statusCode ?? 502, upstream.headers);
      upstream.pipe(res);
    });
    pending.abort = () => {
      out.removeAllListeners('error');
      out.on('error', () => {});
      out.destroy();
    };
  }

  /** Asks the agent without blocking, then answers at once with the rewritten body and a moved index. */
  #serveFault(req: IncomingMessage, res: ServerResponse, prefix: string): void {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const asked = Number(url.searchParams.get('index') ?? '0');
    url.searchParams.delete('index');
    url.searchParams.delete('wait');
    this.#forward(req, res, `${url.pathname}${url.search}`, (upstream) => {
      const chunks: Buffer[] = [];
      upstream.on('data', (c: Buffer) => chunks.push(c));
      upstream.on('end', () => {
        const rewrite = this.#faults.get(prefix);
        let body = Buffer.concat(chunks).toString();
        if (rewrite !== undefined && upstream.statusCode === 200) {
          body = JSON.stringify(rewrite(JSON.parse(body) as Record<string, unknown>));
          this.served.set(prefix, (this.served.get(prefix) ?? 0) + 1);
        }
        const index = Math.max(Number(upstream.headers['x-consul-index'] ?? '0'), asked) + 1;
        res.writeHead(upstream.statusCode ?? 502, { 'content-type': 'application/json', 'x-consul-index': String(index) });
        res.end(body);
      });
    });
  }

  #forward(req: IncomingMessage, res: ServerResponse, path: string, onResponse: (upstream: IncomingMessage) => void): ReturnType<typeof request> {
    const out = request({ ...this.#target, method: req.method, path, headers: req.headers }, onResponse);
    out.on('error', (err) => {
      if (res.headersSent || res.writableEnded) return;
      res.writeHead(502);
      res.end(err.message);
    });
    // The client went away (an aborted blocking query): stop asking the agent too.
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    if (req.readableEnded) out.end();
    else req.pipe(out);
    return out;
  }
}
