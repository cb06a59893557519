/**
 * One HAProxy (HAPROXY_BIN) for a differential test: `haproxy -c` must accept the config without
 * a warning, then it runs in the foreground until `stop()` (by its pid; `stopAll` in an `after`
 * hook ends any left running).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { send } from './matcher-arbs.js';

const execFileAsync = promisify(execFile);
const running = new Map<number, ChildProcess>();

export function stopAll(): void {
  for (const [pid, child] of running) if (child.exitCode === null) process.kill(pid, 'SIGKILL');
  running.clear();
}

/** Checks and starts `cfg`, which listens on 127.0.0.1:`port`; resolves once it answers there. */
export async function serveChecked(cfg: string, port: number): Promise<{ stop(): void }> {
  const check = await execFileAsync(HAPROXY_BIN, ['-c', '-f', cfg]).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`haproxy -c rejected ${cfg}:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  });
  assert.doesNotMatch(`${check.stdout}${check.stderr}`, /\[(WARNING|ALERT)\]/, `${check.stdout}${check.stderr}`);
  const child = spawn(HAPROXY_BIN, ['-f', cfg, '-db'], { stdio: 'ignore' });
  const pid = child.pid ?? 0;
  running.set(pid, child);
  const stop = () => {
    running.delete(pid);
    child.kill('SIGTERM');
  };
  const listening = () => send(port, 'GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n').then(Boolean, () => false);
  for (let tries = 0; !(await listening()); tries++) {
    if (tries > 200 || child.exitCode !== null) {
      stop();
      throw new Error(`haproxy did not listen on ${port}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { stop };
}
