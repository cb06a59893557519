/**
 * The HAProxy binary the tests, the demo harness and the bench run: `HAPROXY_BIN` when set (e.g.
 * `.deps/haproxy-3.0/bin/haproxy` from scripts/install-haproxy30.sh), else `haproxy` from PATH,
 * which is what the daemon itself runs by default. A relative path is made absolute, since the
 * daemon and some tests run HAProxy from another working directory.
 */
import { resolve } from 'node:path';

const fromEnv = process.env['HAPROXY_BIN'];

export const HAPROXY_BIN = fromEnv ? (fromEnv.includes('/') ? resolve(fromEnv) : fromEnv) : 'haproxy';

/** The daemon's `-haproxy` flag for HAPROXY_BIN, or nothing when it is not set (the daemon's default). */
export function haproxyBinArgs(): string[] {
  return fromEnv ? ['-haproxy', HAPROXY_BIN] : [];
}

/**
 * `DATAPLANEAPI_BIN` (a Data Plane API v2.9 binary) runs every sidecar the harness starts with the
 * Data Plane API driver: the integration suite then tests that driver against the real API.
 */
export const DATAPLANEAPI_BIN = process.env['DATAPLANEAPI_BIN'] ? resolve(process.env['DATAPLANEAPI_BIN']) : undefined;

/** The daemon's `-dataplane` flag for DATAPLANEAPI_BIN, or nothing. */
export function dataplaneArgs(): string[] {
  return DATAPLANEAPI_BIN === undefined ? [] : ['-dataplane', DATAPLANEAPI_BIN];
}
