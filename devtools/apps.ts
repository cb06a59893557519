/** Small demo/test applications: an HTTP app that names itself, and a TCP echo server. */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';

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
