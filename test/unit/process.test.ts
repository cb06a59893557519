/**
 * Against the real HAProxy (HAPROXY_BIN, else `haproxy`; 2.6.12 from Debian): a tcp frontend on a unix socket in a temp
 * dir forwarding to node echo servers (also unix sockets). Every test owns its temp dir and stops
 * its own supervisor; leftovers are SIGKILLed by pid in the after hook.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { isHaproxyConnectError } from '../../src/errors.js';
import { checkConfig, compareVersions, haproxyVersion, parseHaproxyVersion } from '../../src/driver/check.js';
import { HaproxyProcess, type HaproxyProcessOptions, type ProcessState } from '../../src/driver/process.js';
import { type Crash, RestartPolicy } from '../../src/reconcile/restart-policy.js';
import { tinyHaproxyConfig } from '../helpers/tiny-haproxy.js';
import { captureLogs, type CapturedLogs } from '../helpers/log-capture.js';
import { waitFor } from '../../devtools/ports.js';
import { isAlive } from '../../src/driver/pids.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { performance } from 'node:perf_hooks';

const WAIT_MS = 10_000;

/** Polls `probe` until it returns something other than undefined or false. */
const until = <T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> =>
  waitFor(
    what,
    async () => {
      const value = await probe();
      return value === false ? undefined : value;
    },
    timeoutMs,
    20,
  );

function config(dir: string, backend: 'a' | 'b', extra = ''): string {
  return tinyHaproxyConfig(dir, { global: ['log stderr format raw local0'], server: `${dir}/echo-${backend}.sock`, extra });
}

/** Sends one line through the frontend and returns what came back. */
function roundTrip(socketPath: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => s.write(`${line}\n`));
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo through ${socketPath}`));
    }, 3_000);
    s.on('data', (d) => {
      got += d.toString();
      if (got.endsWith('\n')) {
        clearTimeout(timer);
        s.end();
        resolve(got.trim());
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

interface Fixture {
  dir: string;
  cfgPath: string;
  logs: CapturedLogs;
  proc: HaproxyProcess;
  seenPids: Set<number>;
}

const fixtures: Fixture[] = [];
const servers: net.Server[] = [];
const openSockets = new Set<net.Socket>();

async function echoServer(socketPath: string, tag: string): Promise<void> {
  const server = net.createServer((s) => {
    openSockets.add(s);
    s.on('close', () => openSockets.delete(s));
    s.on('error', () => undefined);
    s.on('data', (d) => s.write(`${tag}:${d.toString()}`));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
}

async function fixture(options: Partial<HaproxyProcessOptions> = {}): Promise<Fixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-proc-'));
  await echoServer(path.join(dir, 'echo-a.sock'), 'A');
  await echoServer(path.join(dir, 'echo-b.sock'), 'B');
  const cfgPath = path.join(dir, 'haproxy.cfg');
  await fs.writeFile(cfgPath, config(dir, 'a'));
  const logs = captureLogs('debug');
  const proc = new HaproxyProcess({
    haproxyBin: HAPROXY_BIN,
    runDir: dir,
    cfgPath,
    masterSocket: path.join(dir, 'master.sock'),
    logger: logs.logger,
    killTimeoutMs: 2_000,
    ...options,
  });
  const f: Fixture = { dir, cfgPath, logs, proc, seenPids: new Set() };
  fixtures.push(f);
  return f;
}

/** Remembers master and worker pids so the after hook can check (and, if needed, kill) them. */
async function remember(f: Fixture): Promise<number[]> {
  const pids = [f.proc.pid!, ...(await f.proc.workerPids())];
  for (const p of pids) f.seenPids.add(p);
  return pids;
}

function transitions(f: Fixture): string[] {
  return f.logs.lines.filter((l) => l['component'] === 'haproxy-process' && 'from' in l).map((l) => String(l['msg']));
}

afterEach(async () => {
  for (const f of fixtures.splice(0)) {
    await f.proc.stop().catch(() => undefined);
    for (const pid of f.seenPids) {
      if (isAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    await fs.rm(f.dir, { recursive: true, force: true });
  }
});

after(async () => {
  for (const s of openSockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

describe('checkConfig / haproxyVersion', () => {
  test('accepts a valid config', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-check-'));
    try {
      await fs.writeFile(path.join(dir, 'ok.cfg'), config(dir, 'a'));
      await checkConfig(HAPROXY_BIN, path.join(dir, 'ok.cfg'));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test('a broken config is HAPROXY_CONFIG_REJECTED with the ALERT lines', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-check-'));
    try {
      const cfg = path.join(dir, 'bad.cfg');
      await fs.writeFile(cfg, config(dir, 'a', '  bogus-keyword 1'));
      await assert.rejects(checkConfig(HAPROXY_BIN, cfg), (e) => {
        assert.ok(isHaproxyConnectError(e, 'HAPROXY_CONFIG_REJECTED'));
        assert.match(e.message, /\[ALERT\].*unknown keyword 'bogus-keyword'/);
        assert.ok(e.message.includes(cfg));
        assert.doesNotMatch(e.message, /\[NOTICE\]/);
        return true;
      });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test('a missing binary is HAPROXY_NOT_FOUND naming it', async () => {
    await assert.rejects(checkConfig('/nonexistent/haproxy', '/tmp/x.cfg'), (e) => isHaproxyConnectError(e, 'HAPROXY_NOT_FOUND') && e.message.includes('/nonexistent/haproxy'));
    await assert.rejects(haproxyVersion('/nonexistent/haproxy'), (e) => isHaproxyConnectError(e, 'HAPROXY_NOT_FOUND'));
  });

  test('haproxyVersion parses the installed version; versions compare numerically', async () => {
    const version = await haproxyVersion(HAPROXY_BIN);
    assert.match(version, /^\d+\.\d+\.\d+$/);
    assert.ok(compareVersions(version, '2.6') >= 0);
    assert.equal(parseHaproxyVersion('HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/'), '2.6.12');
    assert.equal(parseHaproxyVersion('HA-Proxy version 1.8.19 2019/02/11'), '1.8.19');
    assert.equal(parseHaproxyVersion('nonsense'), undefined);
    assert.ok(compareVersions('3.0', '2.10') > 0);
    assert.ok(compareVersions('2.10', '2.9') > 0);
    assert.ok(compareVersions('2.6.12', '2.6.9') > 0);
    assert.equal(compareVersions('2.6', '2.6.0'), 0);
    assert.ok(compareVersions('2.4', '2.6') < 0);
  });

  test('an haproxy older than 2.6 is refused naming its version; 3.x is not mistaken for older', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-old-haproxy-'));
    try {
      const fake = (name: string, version: string): string => {
        const bin = path.join(dir, name);
        writeFileSync(bin, `#!/bin/sh\necho "HAProxy version ${version} 2024/01/01 - https://haproxy.org/"\n`, { mode: 0o755 });
        return bin;
      };
      await assert.rejects(
        haproxyVersion(fake('old', '2.4.22-1')),
        (e) => isHaproxyConnectError(e, 'HAPROXY_UNSUPPORTED') && e.message.includes('HAProxy 2.4.22') && e.message.includes('2.6 or later'),
      );
      assert.equal(await haproxyVersion(fake('new', '3.0.11-1+deb13u4')), '3.0.11');
      assert.equal(await haproxyVersion(fake('ten', '2.10.1')), '2.10.1');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('HaproxyProcess against real haproxy', () => {
  test('start, reload, failed reload, stop', async () => {
    const f = await fixture();
    const front = path.join(f.dir, 'front.sock');
    assert.equal(f.proc.state, 'stopped');
    await f.proc.start();
    assert.equal(f.proc.state, 'running');
    const [master, firstWorker] = await remember(f);
    assert.ok(master !== undefined && firstWorker !== undefined);
    assert.equal(await roundTrip(front, 'ping'), 'A:ping');

    // Reload onto a config that points at the other echo server.
    await fs.writeFile(f.cfgPath, config(f.dir, 'b'));
    await f.proc.reload();
    assert.equal(f.proc.state, 'running');
    assert.equal(f.proc.pid, master, 'the master survives reloads (it re-executes itself)');
    const [, secondWorker] = await remember(f);
    assert.notEqual(secondWorker, firstWorker);
    assert.equal(await roundTrip(front, 'ping'), 'B:ping');
    await until('old worker to leave', () => !isAlive(firstWorker));

    // A broken config, bypassing checkConfig: the master refuses it, the old worker keeps serving.
    await fs.writeFile(f.cfgPath, config(f.dir, 'a', '  bogus-keyword 1'));
    await assert.rejects(f.proc.reload(), (e) => {
      assert.ok(isHaproxyConnectError(e, 'HAPROXY_RELOAD_FAILED'));
      assert.match(e.message, /bogus-keyword/);
      return true;
    });
    assert.equal(f.proc.state, 'running');
    assert.deepEqual(await f.proc.workerPids(), [secondWorker]);
    assert.equal(await roundTrip(front, 'still'), 'B:still');

    // A good config after a failed reload works again ([failed: N] is compared, not required to be 0).
    await fs.writeFile(f.cfgPath, config(f.dir, 'a'));
    await f.proc.reload();
    assert.equal(await roundTrip(front, 'again'), 'A:again');
    const pids = await remember(f);

    await f.proc.stop();
    assert.equal(f.proc.state, 'stopped');
    assert.equal(f.proc.pid, undefined);
    for (const pid of [...pids, ...f.seenPids]) assert.equal(isAlive(pid), false, `pid ${pid} still running`);

    assert.deepEqual(transitions(f), [
      'stopped -> starting',
      'starting -> running',
      'running -> reloading',
      'reloading -> running',
      'running -> reloading',
      'reloading -> running',
      'running -> reloading',
      'reloading -> running',
      'running -> stopping',
      'stopping -> stopped',
    ]);
    assert.ok(f.logs.find((l) => l['component'] === 'haproxy' && /New worker/.test(String(l['msg']))));
    assert.ok(f.logs.find((l) => l['component'] === 'haproxy' && l['level'] === 'error' && /bogus-keyword/.test(String(l['msg']))));
  });

  test('a reload that outlasts the CLI timeout still succeeds (3.0 answers `reload` only once the new worker is ready)', async () => {
    const f = await fixture();
    const slow = path.join(f.dir, 'slow');
    // At load time, a new master sleeps 2.5 s (longer than one CLI round trip may take) while the file `slow` exists.
    await fs.writeFile(path.join(f.dir, 'slow.lua'), `local f = io.open("${slow}", "r")\nif f then f:close(); os.execute("sleep 2.5") end\n`);
    const withLua = (backend: 'a' | 'b'): string => config(f.dir, backend).replace('global\n', `global\n  lua-load ${f.dir}/slow.lua\n`);
    await fs.writeFile(f.cfgPath, withLua('a'));
    await f.proc.start();
    const [, firstWorker] = await remember(f);
    await fs.writeFile(slow, '');
    await fs.writeFile(f.cfgPath, withLua('b'));
    const started = performance.now();
    await f.proc.reload();
    assert.ok(performance.now() - started >= 2_000, 'the reload was slow');
    assert.equal(f.proc.state, 'running');
    const [, secondWorker] = await remember(f);
    assert.notEqual(secondWorker, firstWorker);
    assert.equal(await roundTrip(path.join(f.dir, 'front.sock'), 'slow'), 'B:slow');
  });

  test('a config haproxy refuses at startup is HAPROXY_START_FAILED with the ALERT lines', async () => {
    const f = await fixture();
    await fs.writeFile(f.cfgPath, config(f.dir, 'a', '  bogus-keyword 1'));
    await assert.rejects(f.proc.start(), (e) => {
      assert.ok(isHaproxyConnectError(e, 'HAPROXY_START_FAILED'));
      assert.match(e.message, /\[ALERT\].*bogus-keyword/);
      return true;
    });
    assert.equal(f.proc.state, 'stopped');
  });

  test('a missing binary is HAPROXY_NOT_FOUND', async () => {
    const f = await fixture({ haproxyBin: '/nonexistent/haproxy' });
    await assert.rejects(f.proc.start(), (e) => isHaproxyConnectError(e, 'HAPROXY_NOT_FOUND'));
    assert.equal(f.proc.state, 'stopped');
  });

  test('a master killed with SIGKILL is reported crashed once its worker is gone, and start() runs it again', async () => {
    const f = await fixture();
    const exits: Array<{ expected: boolean; signal: string | null }> = [];
    f.proc.on('exit', (e: { expected: boolean; signal: string | null }) => exits.push(e));
    const crashed = new Promise<Crash>((resolve) => f.proc.once('crashed', resolve));
    await f.proc.start();
    const [master, worker] = await remember(f);
    process.kill(master!, 'SIGKILL');
    const crash = await crashed;
    assert.equal(crash.pid, master);
    assert.equal(crash.signal, 'SIGKILL');
    assert.ok(crash.ranForMs >= 0 && crash.ranForMs < WAIT_MS);
    assert.deepEqual(
      exits.map((e) => [e.expected, e.signal]),
      [[false, 'SIGKILL']],
    );
    assert.equal(f.proc.state, 'crashed', 'the supervisor does not restart by itself');
    assert.equal(isAlive(master!), false);
    assert.equal(isAlive(worker!), false, 'the old worker followed its master out (or was reaped)');
    await f.proc.start();
    assert.notEqual(f.proc.pid, master);
    await remember(f);
    assert.equal(await roundTrip(path.join(f.dir, 'front.sock'), 'back'), 'A:back');
    const pids = [...f.seenPids];
    await f.proc.stop();
    for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still running`);
  });

  test('with the restart policy: at once the first time, then with backoff; stop during the backoff cancels it', async () => {
    const f = await fixture();
    const policy = new RestartPolicy({ target: f.proc, logger: f.logs.logger, backoff: { baseMs: 100, maxMs: 1_000 } });
    const states: ProcessState[] = [];
    f.proc.on('state', (s: { to: ProcessState }) => states.push(s.to));
    await f.proc.start();
    const [master] = await remember(f);
    process.kill(master!, 'SIGKILL');
    await until('a new master', () => (f.proc.state === 'running' && f.proc.pid !== master ? true : undefined));
    assert.deepEqual(states.slice(-3), ['crashed', 'starting', 'running']);
    await remember(f);
    assert.equal(await roundTrip(path.join(f.dir, 'front.sock'), 'back'), 'A:back');
    const second = f.proc.pid!;
    process.kill(second, 'SIGKILL');
    await until('a third master', () => (f.proc.state === 'running' && f.proc.pid !== second ? true : undefined));
    await remember(f);
    assert.deepEqual(
      f.logs.lines.filter((l) => l['msg'] === 'restarting haproxy after backoff').map((l) => l['delayMs']),
      [0, 100],
    );
    // A third crash in a row waits 200 ms: stopping the policy then the supervisor leaves it stopped.
    const third = f.proc.pid!;
    process.kill(third, 'SIGKILL');
    await until('crashed', () => (f.proc.state === 'crashed' && f.logs.lines.filter((l) => l['msg'] === 'restarting haproxy after backoff').length === 3 ? true : undefined));
    await policy.stop();
    await f.proc.stop();
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(f.proc.state, 'stopped');
    assert.equal(f.proc.pid, undefined);
    for (const pid of f.seenPids) assert.equal(isAlive(pid), false, `pid ${pid} still running`);
  });

  test('a crashed supervisor stopped without the policy settles to stopped', async () => {
    const f = await fixture();
    await f.proc.start();
    const [master] = await remember(f);
    process.kill(master!, 'SIGKILL');
    await until('crashed', () => (f.proc.state === 'crashed' ? true : undefined));
    await f.proc.stop();
    assert.equal(f.proc.state, 'stopped');
  });

  test('stop escalates when a connection keeps the soft-stopping worker busy', async () => {
    const f = await fixture({ killTimeoutMs: 300 });
    await f.proc.start();
    const pids = await remember(f);
    // Hold a connection open through the proxy so the soft stop (SIGUSR1) cannot finish.
    const held = net.connect(path.join(f.dir, 'front.sock'));
    await new Promise<void>((resolve, reject) => {
      held.once('error', reject);
      held.write('hold\n');
      held.once('data', () => resolve());
    });
    const started = Date.now();
    try {
      await f.proc.stop();
    } finally {
      held.destroy();
    }
    assert.ok(Date.now() - started >= 300, 'waited for the kill timeout');
    assert.ok(f.logs.find((l) => l['msg'] === 'haproxy soft stop timed out; sending SIGTERM'));
    for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still running`);
  });

  test('stop while starting aborts the start and leaves no process', async () => {
    const f = await fixture();
    const starting = f.proc.start();
    await until('a spawned master', () => f.proc.pid);
    const master = f.proc.pid!;
    await f.proc.stop();
    await assert.rejects(starting, (e) => isHaproxyConnectError(e, 'ABORTED'));
    assert.equal(f.proc.state, 'stopped');
    assert.equal(isAlive(master), false);
  });

  test('reload when not running is refused', async () => {
    const f = await fixture();
    await assert.rejects(f.proc.reload(), (e) => isHaproxyConnectError(e, 'HAPROXY_RELOAD_FAILED'));
  });
});
