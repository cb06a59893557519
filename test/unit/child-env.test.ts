/**
 * HAProxy and `haproxy -c` / `haproxy -v` run with a minimal environment (src/driver/child-env.ts):
 * nothing of the daemon's CONSUL_* variables, tokens or key paths reaches them. Checked on the
 * helper, on a stand-in binary that records its environment, and on a real HAProxy 2.6.12 master
 * and worker through /proc/<pid>/environ, before and after a reload (the master re-executes itself).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { waitFor } from '../../devtools/ports.js';
import { checkConfig, haproxyVersion } from '../../src/driver/check.js';
import { HAPROXY_ENV_ALLOWED, haproxyEnv } from '../../src/driver/child-env.js';
import { HaproxyProcess } from '../../src/driver/process.js';
import { captureLogs } from '../helpers/log-capture.js';
import { tinyHaproxyConfig } from '../helpers/tiny-haproxy.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const SECRET = 'secret-token-0b8f';
const DAEMON_ENV = {
  CONSUL_HTTP_TOKEN: SECRET,
  CONSUL_HTTP_TOKEN_FILE: '/etc/consul/web.token',
  CONSUL_CLIENT_KEY: '/etc/consul/client-key.pem',
  CONSUL_CLIENT_CERT: '/etc/consul/client.pem',
  CONSUL_HTTP_ADDR: '127.0.0.1:8500',
  AWS_SECRET_ACCESS_KEY: SECRET,
  NODE_OPTIONS: '--inspect',
};

let dir: string;
const saved = new Map<string, string | undefined>();
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-env-'));
  for (const [name, value] of Object.entries(DAEMON_ENV)) {
    saved.set(name, process.env[name]);
    process.env[name] = value;
  }
});
after(async () => {
  for (const [name, value] of saved) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  await fs.rm(dir, { recursive: true, force: true });
});

/** NAME=value entries of /proc/<pid>/environ. */
function environ(pid: number): Map<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .filter((e) => e !== '');
  return new Map(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

function assertClean(env: Map<string, string>, what: string): void {
  const leaked = [...env].filter(([name, value]) => name.startsWith('CONSUL_') || value.includes(SECRET) || name === 'NODE_OPTIONS');
  assert.deepEqual(leaked, [], `${what} inherited: ${JSON.stringify(leaked)}`);
}

describe('the environment of haproxy child processes', () => {
  test('only the allowed variables that are set', () => {
    const env = haproxyEnv({ ...DAEMON_ENV, PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', TZ: 'UTC', HOME: '/root', LC_ALL: undefined });
    assert.deepEqual(env, { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', TZ: 'UTC' });
    assert.deepEqual([...HAPROXY_ENV_ALLOWED].sort(), ['LANG', 'LC_ALL', 'PATH', 'TZ']);
  });

  test('haproxy -v and haproxy -c get only that', async () => {
    // A stand-in binary that records its environment and answers like HAProxy.
    const bin = path.join(dir, 'haproxy');
    await fs.writeFile(bin, `#!/bin/sh\nenv > "${dir}/env.$1"\necho "HAProxy version 2.6.12-1+deb12u4 2023/01/01"\n`, { mode: 0o755 });
    assert.equal(await haproxyVersion(bin), '2.6.12');
    await checkConfig(bin, path.join(dir, 'none.cfg'));
    for (const flag of ['-v', '-c']) {
      const lines = readFileSync(path.join(dir, `env.${flag}`), 'utf8')
        .split('\n')
        .filter((l) => l !== '');
      const env = new Map(lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      assertClean(env, `haproxy ${flag}`);
      assert.equal(env.get('PATH'), process.env.PATH);
    }
  });

  test('a real master and worker, before and after a reload (/proc/<pid>/environ)', async () => {
    const runDir = await fs.mkdtemp(path.join(dir, 'run-'));
    const cfgPath = path.join(runDir, 'haproxy.cfg');
    await fs.writeFile(cfgPath, tinyHaproxyConfig(runDir, { global: [`stats socket ${runDir}/admin.sock mode 600 level admin expose-fd listeners`] }));
    const spawned: number[] = [];
    const proc = new HaproxyProcess({
      haproxyBin: HAPROXY_BIN,
      runDir,
      cfgPath,
      masterSocket: path.join(runDir, 'master.sock'),
      logger: captureLogs('debug').logger,
      killTimeoutMs: 2_000,
      onSpawn: (pid) => spawned.push(pid),
    });
    try {
      await proc.start();
      assert.deepEqual(spawned, [proc.pid], 'onSpawn reports the master pid');
      const check = async (when: string): Promise<void> => {
        const workers = await proc.workerPids();
        for (const [pid, role] of [[proc.pid as number, 'master'], ...workers.map((w) => [w, 'worker'] as const)] as const) {
          const env = environ(pid);
          assertClean(env, `${role} ${pid} ${when}`);
          assert.equal(env.get('PATH'), process.env.PATH);
        }
      };
      await check('after start');
      const before = new Set(await proc.workerPids());
      await proc.reload();
      await waitFor('the old worker to leave', async () => ((await proc.workerPids()).every((w) => !before.has(w)) ? true : undefined), 10_000, 25);
      await check('after a reload');
    } finally {
      await proc.stop();
    }
  });
});
