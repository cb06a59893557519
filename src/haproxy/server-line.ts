/**
 * The one source of truth for a server's options, used by render.ts (haproxy.cfg) and by the
 * runtime `add server` command, so a server added through the runtime API is identical to one
 * loaded from the file. Pure.
 *
 * Measured on 2.6.12: a dynamic server inherits nothing from `default-server` nor from the
 * defaults HAProxy gives file servers. `show servers conn` showed a dynamic server with
 * `purge_delay 0` and `idle_lim 0`: it kept no idle connection at all, so `http-reuse always`
 * did nothing for it and every request paid a full mTLS handshake (FACTS §3: 25x slower).
 * With `pool-max-conn -1 pool-purge-delay 5s` (the file servers' defaults, written out) it pooled
 * like a file server. Whatever matters is therefore written on the line itself, never left to
 * defaults. `default-server init-addr libc,none` is not needed here: dynamic servers always use
 * `none`, which is why the planner sends only IP literals through the runtime API.
 */
import type { Backend, Server } from './model.js';

/** Explicit rather than inherited from `ssl-default-server-options`, so dynamic servers get it too. */
export const SERVER_SSL_MIN_VERSION = 'TLSv1.2';
/** `pool-max-conn -1`: unlimited idle connections, HAProxy's default for file servers. */
export const SERVER_POOL_MAX_CONN = -1;
/** HAProxy's default for file servers (5 s); dynamic servers otherwise get 0. */
export const SERVER_POOL_PURGE_DELAY = '5s';

/**
 * Health checks of a server with passive health run this rarely while it is up, so they cost
 * nothing in practice: `on-error mark-down` switches to `fastinter` by itself (measured on 2.6.12:
 * with `inter 1h fastinter 2s`, a marked-down server was back 2 s later).
 */
export const PASSIVE_HEALTH_UP_INTER = '1h';

function durationArg(ms: number): string {
  const whole = Math.round(ms);
  return whole % 1000 === 0 ? `${whole / 1000}s` : `${whole}ms`;
}

/**
 * Outlier ejection: `error-limit` consecutive errors mark the server down; a check `ejectMs`
 * later (the TLS handshake with the peer sidecar, as for traffic) brings it back at the first
 * success (`rise 1`). Accepted on `add server` (measured on 2.6.12 and 3.0.11); a server added at
 * runtime needs `enable health` for its checks (runtime-ops.ts).
 */
function passiveHealthOptions(backend: Backend): string[] {
  const health = backend.passiveHealth;
  if (health === undefined) return [];
  const eject = durationArg(health.ejectMs);
  return ['check', 'observe', health.observe, 'error-limit', String(health.errorLimit), 'on-error', 'mark-down', 'inter', PASSIVE_HEALTH_UP_INTER, 'fastinter', eject, 'downinter', eject, 'rise', '1'];
}

/** `addr:port`, with IPv6 literals in brackets as HAProxy's address parser expects. */
export function formatAddress(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Backends that ask for connection reuse (upstreams in HTTP mode) get the pool settings spelled
 * out. The local application's backend leaves `httpReuse` unset: its single server comes from the
 * file only, where HAProxy's defaults already pool.
 */
function pools(backend: Backend): boolean {
  return backend.mode === 'http' && backend.httpReuse !== undefined && backend.httpReuse !== 'never';
}

/**
 * Every option after `<name> <addr:port>`, in a fixed order. File names stay relative: both the
 * file and `add server` resolve them against `crt-base`/`ca-base` (measured: `add server ... crt
 * nothere.pem` reports "unable to stat SSL certificate '<runDir>/nothere.pem'").
 * Never contains `enabled`/`disabled`: the runtime path adds servers in maintenance and enables
 * them with a separate command (FACTS §2: `enabled` on add server leaves a server outside
 * load balancing on 2.6.12).
 */
export function serverOptions(server: Server, backend: Backend): string[] {
  const options = ['weight', String(server.weight)];
  if (backend.tls !== undefined) {
    // No `sni`: HAProxy would then verify the name, which Consul leaves do not carry (FACTS.md §2).
    options.push('ssl', 'verify', 'required', 'crt', backend.tls.crt, 'ca-file', backend.tls.caFile);
    options.push('ssl-min-ver', SERVER_SSL_MIN_VERSION);
    if (backend.tls.alpn !== undefined) options.push('alpn', backend.tls.alpn.join(','));
  }
  if (backend.protoH2) options.push('proto', 'h2');
  if (pools(backend)) {
    options.push('pool-max-conn', String(SERVER_POOL_MAX_CONN), 'pool-purge-delay', SERVER_POOL_PURGE_DELAY);
  }
  options.push(...passiveHealthOptions(backend));
  return options;
}

/** `<name> <addr:port> <options>`: the part shared by the `server` line and `add server`. */
export function serverSpec(server: Server, backend: Backend): string {
  return [server.name, formatAddress(server.address, server.port), ...serverOptions(server, backend)].join(' ');
}

/** The haproxy.cfg line (without indentation). */
export function serverConfigLine(server: Server, backend: Backend): string {
  return `server ${serverSpec(server, backend)}${server.maintenance === true ? ' disabled' : ''}`;
}
