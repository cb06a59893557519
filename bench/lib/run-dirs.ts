/** Finding a haproxy-connect sidecar's run directory (its haproxy.cfg) under the testbed's run base, and its master's reload counter. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../../devtools/ports.js';
import { parseShowProc, sendCommand } from '../../src/driver/master-cli.js';
import { MASTER_SOCKET } from '../../src/main.js';
import { bindsPort } from './l7-path.js';

const MASTER_CLI_TIMEOUT_MS = 5_000;
const RUN_DIR_WAIT_MS = 5_000;

/**
 * The run directory under `runBase` whose haproxy.cfg binds `port` (a sidecar's public or upstream
 * listener); the newest one if a stopped sidecar left one behind. Undefined while none does.
 */
export function runDirBinding(runBase: string, port: number): string | undefined {
  let found: { dir: string; mtimeMs: number } | undefined;
  for (const name of readdirSync(runBase)) {
    const cfg = join(runBase, name, 'haproxy.cfg');
    if (!existsSync(cfg)) continue;
    try {
      const mtimeMs = statSync(cfg).mtimeMs;
      if (bindsPort(readFileSync(cfg, 'utf8'), port) && (found === undefined || mtimeMs > found.mtimeMs)) found = { dir: join(runBase, name), mtimeMs };
    } catch {
      // Removed between listing and reading (a sidecar stopping).
    }
  }
  return found?.dir;
}

/**
 * The reload counter of the HAProxy master whose run directory is `runDir` (`show proc` on its
 * master CLI): it counts every reload whichever driver asked for it (the Data Plane API's reload
 * command signals the same master).
 */
export async function masterReloads(runDir: string): Promise<number> {
  return parseShowProc(await sendCommand(join(runDir, MASTER_SOCKET), 'show proc', { timeoutMs: MASTER_CLI_TIMEOUT_MS })).master.reloads;
}

/**
 * `masterReloads` of the sidecar whose haproxy.cfg binds `port`. Polls for up to RUN_DIR_WAIT_MS:
 * with the Data Plane API driver one read right after a pair's set-up found no run directory
 * binding the port (the API rewrites haproxy.cfg when it saves runtime changes).
 */
export async function masterReloadsBinding(runBase: string, port: number): Promise<number> {
  const dir = await waitFor(`a run directory under ${runBase} to bind port ${port}`, async () => runDirBinding(runBase, port), RUN_DIR_WAIT_MS, 50);
  return masterReloads(dir);
}
