/**
 * How the haproxy-connect bin starts Node: the environment and flags of the `#!/usr/bin/env -S`
 * line of src/cli.ts (dist/cli.js keeps it). Tests and the bench run the daemon as `node <flags>
 * <script>`, which skips the line, so they add what it says and run the daemon as users do.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './consul-dev-agent.js';

export interface DaemonNode {
  /** Node flags, before the script. */
  args: string[];
  /** Variables the line sets (NAME=VALUE before `node`). */
  env: Record<string, string>;
}

/** Reads a `#!/usr/bin/env -S [NAME=VALUE ...] node [flag ...]` line. PURE. */
export function parseShebang(line: string): DaemonNode {
  const match = /^#!\/usr\/bin\/env -S (.+)$/.exec(line.trim());
  if (match === null) return { args: [], env: {} };
  const words = (match[1] as string).split(/\s+/);
  const node = words.indexOf('node');
  if (node < 0) throw new Error(`the shebang '${line}' does not run node`);
  const env = Object.fromEntries(words.slice(0, node).map((w) => w.split('=', 2) as [string, string]));
  return { args: words.slice(node + 1), env };
}

export function daemonNode(): DaemonNode {
  return parseShebang(readFileSync(join(REPO_ROOT, 'src/cli.ts'), 'utf8').split('\n', 1)[0] ?? '');
}
