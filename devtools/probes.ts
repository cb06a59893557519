/** Clients for tests: plain HTTP GETs, a raw TLS HTTP probe, and a TCP line exchange. */
import { connect as netConnect } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';

/** GET over a fresh connection (no pooling), returning status and body. */
export async function httpGet(port: number, path = '/', timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

export interface TlsProbeOptions {
  port: number;
  ca: string;
  cert?: string;
  key?: string;
  timeoutMs?: number;
}

/**
 * Sends one HTTP/1.1 request over TLS and returns the raw response, or `refused: <reason>` when the
 * handshake or the connection fails. With TLS 1.3 a rejected client certificate surfaces after the
 * client's handshake completes, so the probe waits for the response either way.
 */
export function tlsHttpProbe(opts: TlsProbeOptions): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    let settled = false;
    const done = (result: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: opts.port,
      ca: opts.ca,
      ...(opts.cert !== undefined && { cert: opts.cert }),
      ...(opts.key !== undefined && { key: opts.key }),
      checkServerIdentity: () => undefined,
    });
    const timer = setTimeout(() => done('refused: timeout'), opts.timeoutMs ?? 5_000);
    socket.on('secureConnect', () => socket.write('GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n'));
    socket.on('data', (d: Buffer) => {
      data += d.toString();
    });
    socket.on('error', (err) => done(data !== '' ? data : `refused: ${err.message}`));
    socket.on('close', () => done(data !== '' ? data : 'refused: closed without a response'));
  });
}

/** Connects, reads the first line, sends `line`, reads the echo. */
export function tcpExchange(port: number, line: string, timeoutMs = 5_000): Promise<{ greeting: string; echo: string }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    let buffer = '';
    let greeting: string | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`tcp exchange on port ${port} timed out (got '${buffer}')`));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => {
      buffer += d.toString();
      if (greeting === undefined && buffer.includes('\n')) {
        greeting = buffer.slice(0, buffer.indexOf('\n'));
        buffer = buffer.slice(buffer.indexOf('\n') + 1);
        socket.write(`${line}\n`);
      }
      if (greeting !== undefined && buffer.includes('\n')) {
        clearTimeout(timer);
        socket.end();
        resolve({ greeting, echo: buffer.slice(0, buffer.indexOf('\n')) });
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`connection to port ${port} closed (got '${buffer}')`));
    });
  });
}

/** The certificate a TLS listener on `port` serves (to a client presenting `cert`/`key`, if given); undefined when the handshake fails. */
export function servedCertificate(port: number, client: { ca?: string; cert?: string; key?: string } = {}, timeoutMs = 5_000): Promise<X509Certificate | undefined> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ...client, checkServerIdentity: () => undefined, rejectUnauthorized: false }, () => {
      const peer = socket.getPeerX509Certificate();
      socket.destroy();
      resolve(peer);
    });
    socket.on('error', () => resolve(undefined));
    setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, timeoutMs).unref();
  });
}
