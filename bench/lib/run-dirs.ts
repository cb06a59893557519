/** Finding a haproxy-connect sidecar's run directory (its haproxy.cfg) under the testbed's run base. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { bindsPort } from './l7-path.js';

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
