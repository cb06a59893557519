/** The versions and the machine every result was measured with. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { CONSUL_BIN, REPO_ROOT } from '../../devtools/consul-dev-agent.js';
import { HAPROXY_BIN } from './haproxy-fixtures.js';
import { FORTIO_BIN, WRK_BIN } from './load-tools.js';

export interface Environment {
  haproxy: string;
  openssl: string;
  node: string;
  consul: string;
  haproxyConnect: string;
  wrk: string;
  fortio: string;
  kernel: string;
  cpuModel: string;
  cpuCount: number;
  gitCommit: string;
}

/** First line of a command's output (stdout or stderr: wrk prints its version with its usage and exits 1). */
function firstLine(command: string, args: readonly string[]): string {
  let out: string;
  try {
    out = execFileSync(command, args, { stdio: 'pipe', encoding: 'utf8' });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    out = `${e.stdout ?? ''}${e.stderr ?? ''}` || `unavailable (${e.message.split('\n')[0]})`;
  }
  return (out.trim().split('\n')[0] ?? '').trim();
}

export function captureEnvironment(): Environment {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version?: string };
  return {
    haproxy: firstLine(HAPROXY_BIN, ['-v']),
    openssl: firstLine('openssl', ['version']),
    node: process.version,
    consul: firstLine(CONSUL_BIN, ['version']),
    haproxyConnect: pkg.version ?? 'unknown',
    wrk: firstLine(WRK_BIN, ['-v']),
    fortio: firstLine(FORTIO_BIN, ['version']),
    kernel: release(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpuCount: cpus().length,
    gitCommit: firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
  };
}
