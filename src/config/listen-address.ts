/**
 * `<ip>:<port>` listen addresses as Go's net.Listen takes them (the original tool's -stats-addr):
 * `127.0.0.1:9102`, `[::1]:9102`, `0.0.0.0:9102`, `[::]:9102`, or `:9102` for every interface.
 * PURE.
 */
import { isIP } from 'node:net';

const MAX_PORT = 65_535;

export interface ListenAddress {
  /** An IP literal without brackets; undefined for every interface (`:port`). */
  host: string | undefined;
  port: number;
}

/** Parses `raw`, or returns undefined when it is not `<ip>:<port>` with a port in 1..65535. */
export function parseListenAddress(raw: string): ListenAddress | undefined {
  const value = raw.trim();
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  if (match === null) return undefined;
  const bracketed = match[1];
  const plain = match[2];
  const port = Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > MAX_PORT) return undefined;
  if (bracketed !== undefined) return isIP(bracketed) === 6 ? { host: bracketed, port } : undefined;
  if (plain === undefined || plain === '') return { host: undefined, port };
  return isIP(plain) === 4 ? { host: plain, port } : undefined;
}

/** True for the addresses that mean every interface. */
export function isWildcardHost(host: string | undefined): boolean {
  return host === undefined || host === '0.0.0.0' || host === '::';
}

/** `host:port`, with brackets around IPv6, for messages and URLs. */
export function formatListenAddress(address: ListenAddress): string {
  const host = address.host ?? '';
  return `${host.includes(':') ? `[${host}]` : host}:${address.port}`;
}
