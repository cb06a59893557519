/**
 * Small demo/test applications: an HTTP app that names itself (also one that can be slowed down), a
 * TCP echo server, and a port where connects hang.
 */
import { spawn } from 'node:child_process';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { killOnExit } from './children.js';

export interface RunningApp {
  port: number;
  close(): Promise<void>;
}

function closeServer(server: HttpServer | TcpServer): Promise<void> {
  return new Promise((resolve) => {
    if ('closeAllConnections' in server) server.closeAllConnections();
    server.close(() => resolve());
  });
}

/**
 * An HTTP app answering `<name>` (or what `respond` returns). With `upstreamPort`, it calls that
 * local upstream listener and includes the answer: `web -> api`.
 */
export async function startHttpApp(name: string, port: number, upstreamPort?: number): Promise<RunningApp> {
  const server = createHttpServer((req, res) => {
    void (async () => {
      let body = `hello from ${name}`;
      if (upstreamPort !== undefined) {
        try {
          const upstream = await fetch(`http://127.0.0.1:${upstreamPort}${req.url ?? '/'}`);
          body += ` -> ${await upstream.text()}`;
        } catch (err) {
          res.writeHead(502).end(`${name}: upstream failed: ${(err as Error).message}\n`);
          return;
        }
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return { port, close: () => closeServer(server) };
}

/** A TCP server that greets with `<name>\n` and then echoes. */
export async function startTcpEcho(name: string, port: number): Promise<RunningApp> {
  const server = createTcpServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.write(`${name}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return { port, close: () => closeServer(server) };
}

/** An HTTP app whose answers can be slowed down while it runs. */
export interface TunableHttpApp extends RunningApp {
  /** Milliseconds every answer waits before it is sent (0: at once). */
  delayMs: number;
}

/**
 * An HTTP app answering `hello from <name>`, like startHttpApp, after `delayMs` (settable at any
 * time): an instance that is kept busy on demand, for load-balancing tests.
 */
export async function startTunableHttpApp(name: string, port: number): Promise<TunableHttpApp> {
  const timers = new Set<NodeJS.Timeout>();
  const server = createHttpServer((_req, res) => {
    const answer = (): void => {
      if (!res.destroyed) res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello from ${name}`);
    };
    if (app.delayMs <= 0) {
      answer();
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      answer();
    }, app.delayMs);
    timers.add(timer);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const app: TunableHttpApp = {
    port,
    delayMs: 0,
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await closeServer(server);
    },
  };
  return app;
}

/** The accept-queue size the hanging listener asks for (listen(2) backlog). */
const HANGING_BACKLOG = 1;
/** How long a probe connect must stay pending to count as hanging. */
const HANGING_PROBE_MS = 300;

/** Resolves true when a connect to `port` completes (or fails) within `ms`, false while it still hangs then. */
function connectSettles(port: number, ms: number, keep: Socket[]): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    keep.push(socket);
    socket.on('error', () => {});
    const timer = setTimeout(() => resolve(false), ms);
    const settled = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    socket.once('connect', settled);
    socket.once('error', settled);
  });
}

/**
 * A loopback TCP port where a connect hangs (SYN_SENT until the client's own timeout), for
 * connect-timeout tests. A child process listens with a backlog of 1 and never accepts (its event
 * loop is blocked in Atomics.wait right after listen), and this function fills the accept queue
 * with client connections. Linux then drops every further SYN (the listen queue overflows; with
 * net.ipv4.tcp_abort_on_overflow = 0, the default, no RST is sent), so the next connect neither
 * succeeds nor fails. Measured on Linux 6.x loopback: the first two connects to a backlog-1
 * listener complete, the third hangs. The function proves the hang with a probe connect that must
 * still be pending after 300 ms, and throws otherwise. close() kills the child (by its own handle).
 */
export async function startHangingListener(port: number): Promise<RunningApp> {
  const script = [
    "const server = require('node:net').createServer();",
    `server.listen({ port: ${port}, host: '127.0.0.1', backlog: ${HANGING_BACKLOG} }, () => {`,
    "  process.stdout.write('listening\\n');",
    '  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);',
    '});',
  ].join('\n');
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const sockets: Socket[] = [];
  const close = async (): Promise<void> => {
    for (const socket of sockets) socket.destroy();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      child.stdout?.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the hanging listener on port ${port} exited with ${code}: ${stderr}`)));
      setTimeout(() => reject(new Error(`the hanging listener on port ${port} did not start within 10 s`)), 10_000).unref();
    });
    // Fill the accept queue (backlog + 1 connections on Linux), then prove that one more hangs.
    for (let i = 0; i <= HANGING_BACKLOG; i++) {
      if (!(await connectSettles(port, 2_000, sockets))) throw new Error(`filling the accept queue of port ${port}: connect ${i + 1} hung already`);
    }
    if (await connectSettles(port, HANGING_PROBE_MS, sockets)) {
      throw new Error(`a connect to port ${port} does not hang once its accept queue is full (net.ipv4.tcp_abort_on_overflow set?)`);
    }
    return { port, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** What startReportingHttpApp answers: who answered, and the request exactly as it arrived. */
export interface HttpReport {
  /** The app's name. */
  id: string;
  method: string;
  /** The request target as received (raw, %-encoding and query kept). */
  path: string;
  /** Header name (lower case) → its values, one per header line, in arrival order. */
  headers: Record<string, string[]>;
  /** Present (true) on a 503 of `failNext`. */
  failed?: true;
}

/** A reporting HTTP app and the knobs a test turns while it runs. */
export interface ReportingHttpApp extends RunningApp {
  /** Response headers added to every answer, in this order (a name may repeat). */
  responseHeaders: Array<[string, string]>;
  /** Milliseconds every answer (200 or 503) waits before it is sent (0: at once). */
  delayMs: number;
  /** Answer 503 to this many of the next requests (decremented per request). */
  failNext: number;
  /** Requests received so far (every parsed request, answered 200 or 503). */
  requests: number;
}

/**
 * An HTTP app that reports each request as JSON (HttpReport): 200 `{ id, method, path, headers }`,
 * or 503 with `failed: true` while `failNext` > 0, both after `delayMs` and with `responseHeaders`.
 * A request Node cannot parse (e.g. a lower-case method) gets a 400 whose JSON body still names the
 * app (`{ id, error }`), so a test can tell which app it reached.
 */
export async function startReportingHttpApp(name: string, port: number): Promise<ReportingHttpApp> {
  const timers = new Set<NodeJS.Timeout>();
  const server = createHttpServer((req, res) => {
    app.requests++;
    const failing = app.failNext > 0;
    if (failing) app.failNext--;
    const headers: Record<string, string[]> = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const key = (req.rawHeaders[i] as string).toLowerCase();
      headers[key] = [...(headers[key] ?? []), req.rawHeaders[i + 1] as string];
    }
    const report: HttpReport = { id: name, method: req.method ?? '', path: req.url ?? '', headers, ...(failing && { failed: true as const }) };
    const body = JSON.stringify(report);
    const answer = (): void => {
      if (res.destroyed) return;
      const out: string[] = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body))];
      for (const [k, v] of app.responseHeaders) out.push(k, v);
      res.writeHead(failing ? 503 : 200, out).end(body);
    };
    // Read the request body (if any) before answering.
    req.resume();
    req.once('end', () => {
      if (app.delayMs <= 0) return answer();
      const timer = setTimeout(() => {
        timers.delete(timer);
        answer();
      }, app.delayMs);
      timers.add(timer);
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const body = JSON.stringify({ id: name, error: err.code ?? err.message });
    if (socket.writable) socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const app: ReportingHttpApp = {
    port,
    responseHeaders: [],
    delayMs: 0,
    failNext: 0,
    requests: 0,
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await closeServer(server);
    },
  };
  return app;
}
