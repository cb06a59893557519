/**
 * The Data Plane API's own configuration file, generated into the run directory (never under
 * /etc), and the version check. PURE.
 *
 * Measured on v2.9.27 with HAProxy 2.6.12:
 * - runtime map entries are addressed by a name under `maps_dir` (an absolute path is rewritten
 *   into it), and stored files live in `ssl_certs_dir` and `general_storage_dir`: all three are
 *   the run directory, where haproxy.cfg already names its maps and certificates;
 * - `master_runtime` is left unset: its `@1` prefix empties every runtime list on 2.6;
 * - reloads run `reload_cmd` split on spaces, without a shell: a script in the run directory
 *   signals the master (SIGUSR2: a master-worker reload).
 */
import { join } from 'node:path';
import { HaproxyConnectError } from '../errors.js';

export { DATAPLANE_CONFIG_FILE } from '../domain/haproxy-names.js';
export const DATAPLANE_SOCKET_FILE = 'dataplane.sock';
export const DATAPLANE_RELOAD_SCRIPT = 'dataplane-reload.sh';
/** The master's pid, written by the driver only while it reloads; read by the reload script. */
export const HAPROXY_MASTER_PID_FILE = 'haproxy-master.pid';
export const DATAPLANE_USER = 'haproxy-connect';
/** Folders the API insists on having (transactions, storage it is not given anything for). */
export const DATAPLANE_WORK_DIRS = ['dataplane-transactions', 'dataplane-spoe', 'dataplane-spoe-transactions'] as const;

/** The versions this driver was measured against: the v2 API of the 2.9 line (HAProxy 2.6). */
export const SUPPORTED_MAJOR = 2;
export const SUPPORTED_MINOR = 9;

export interface ApiConfigInput {
  runDir: string;
  haproxyBin: string;
  password: string;
}

/** A YAML scalar: JSON's quoting is valid YAML and leaves nothing to interpretation. */
function q(value: string): string {
  return JSON.stringify(value);
}

export function renderApiConfig({ runDir, haproxyBin, password }: ApiConfigInput): string {
  for (const [what, value] of [
    ['run directory', runDir],
    ['haproxy binary', haproxyBin],
  ] as const) {
    // reload_cmd is split on spaces, so the script's path must have none.
    if (/[\s]/.test(value)) throw new HaproxyConnectError('CONFIG_INVALID', `The Data Plane API driver cannot use a ${what} with white space in its path: ${JSON.stringify(value)}`);
  }
  const reload = `/bin/sh ${join(runDir, DATAPLANE_RELOAD_SCRIPT)}`;
  const [tx, spoe, spoeTx] = DATAPLANE_WORK_DIRS.map((d) => join(runDir, d));
  return [
    'config_version: 2',
    'name: haproxy-connect',
    'dataplaneapi:',
    '  scheme: [unix]',
    `  socket_path: ${q(join(runDir, DATAPLANE_SOCKET_FILE))}`,
    '  user:',
    `    - name: ${q(DATAPLANE_USER)}`,
    '      insecure: true',
    `      password: ${q(password)}`,
    '  transaction:',
    `    transaction_dir: ${q(tx as string)}`,
    '    backups_number: 0',
    '  resources:',
    `    maps_dir: ${q(runDir)}`,
    `    ssl_certs_dir: ${q(runDir)}`,
    `    general_storage_dir: ${q(runDir)}`,
    `    spoe_dir: ${q(spoe as string)}`,
    `    spoe_transaction_dir: ${q(spoeTx as string)}`,
    'haproxy:',
    `  config_file: ${q(join(runDir, 'haproxy.cfg'))}`,
    `  haproxy_bin: ${q(haproxyBin)}`,
    '  reload:',
    '    reload_delay: 1',
    `    reload_cmd: ${q(reload)}`,
    // A restart of the master would lose our supervision of it; a master-worker reload re-executes
    // the master and replaces every worker, which is what a restart is asked to achieve.
    `    restart_cmd: ${q(reload)}`,
    '    reload_strategy: custom',
    'log:',
    '  log_to: stdout',
    '  log_level: warning',
    '',
  ].join('\n');
}

/**
 * The reload script: SIGUSR2 to the master whose pid the driver wrote. Without that file (a reload
 * the API scheduled on its own) it does nothing and succeeds: a failed reload makes the API copy its
 * last known good file (`haproxy.cfg.lkg`, the one of its last successful reload) over haproxy.cfg
 * (measured on v2.9.27), which put the bootstrap configuration back on disk at the first start.
 */
export function renderReloadScript(runDir: string): string {
  return `#!/bin/sh\npid=$(cat ${join(runDir, HAPROXY_MASTER_PID_FILE)} 2>/dev/null) || exit 0\nexec kill -USR2 "$pid"\n`;
}

export interface ApiVersion {
  major: number;
  minor: number;
  patch: number;
  text: string;
}

/** `/v2/info`'s `api.version`, e.g. `v2.9.27 9818b7d1`; throws DATAPLANE_UNSUPPORTED for anything else. */
export function parseApiVersion(text: string, bin: string): ApiVersion {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text.trim());
  if (match === null) throw new HaproxyConnectError('DATAPLANE_UNSUPPORTED', `The Data Plane API ${bin} reports a version haproxy-connect cannot read: ${JSON.stringify(text)}`);
  return { major: Number(match[1]), minor: Number(match[2]), patch: Number(match[3]), text: text.trim() };
}

/** Refuses every version but the measured line, naming the version found. */
export function checkApiVersion(version: ApiVersion, bin: string): void {
  if (version.major !== SUPPORTED_MAJOR || version.minor !== SUPPORTED_MINOR) {
    throw new HaproxyConnectError(
      'DATAPLANE_UNSUPPORTED',
      `The Data Plane API ${bin} is version ${version.text}; haproxy-connect drives the v${SUPPORTED_MAJOR} API of the ${SUPPORTED_MAJOR}.${SUPPORTED_MINOR}.x line (the one for HAProxy 2.6)`,
    );
  }
}
