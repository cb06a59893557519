/**
 * One daemon per proxy and no orphans (src/driver/orphans.ts, src/driver/owner-record.ts): the
 * pure matchers as tables, the owner record's file rules, and claims against real processes — a
 * real HAProxy 2.6.12 master-worker left behind in a run directory, a live "daemon", a bystander
 * HAProxy in another run directory. Every process is started here and killed by pid in `after`.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { waitFor } from '../../devtools/ports.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { RUN_DIR_PREFIX } from '../../src/driver/files.js';
import { parseShowProc, sendCommand } from '../../src/driver/master-cli.js';
import { claimSidecar, findRunDirHaproxy, haproxyPaths, isDataplaneApiOfRunDir, isHaproxyOfRunDir, isRecordedDaemon, isRunDirUnder } from '../../src/driver/orphans.js';
import { cmdlineHash, createOwnerRecord, ownerRecordName, ownerRecordPath, readOwnerRecord, removeOwnerRecordIf, replaceOwnerRecord, type OwnerRecord } from '../../src/driver/owner-record.js';
import { isAlive, parseCmdline, procCmdline, procStat } from '../../src/driver/pids.js';
import { captureLogs } from '../helpers/log-capture.js';
import { tinyHaproxyConfig } from '../helpers/tiny-haproxy.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const RUN = '/var/lib/hc/haproxy-connect-Ab12Cd';
const started = new Set<number>();
let base: string;

before(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-orphans-'));
});
after(async () => {
  for (const pid of started) {
    try {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  await fs.rm(base, { recursive: true, force: true });
});

describe('matching an haproxy command line to a run directory', () => {
  const cases: Array<[string, string[], boolean]> = [
    ['as the supervisor spawns it', ['haproxy', '-W', '-S', `${RUN}/master.sock,mode,600`, '-f', `${RUN}/haproxy.cfg`], true],
    ['after a reload (2.6.12 puts -sf and -x in front)', ['/usr/sbin/haproxy', '-sf', '4242', '-x', 'sockpair@3', '-W', '-S', `${RUN}/master.sock,mode,600`, '-f', `${RUN}/haproxy.cfg`], true],
    ['only -f given', ['haproxy', '-f', `${RUN}/haproxy.cfg`], true],
    ['a custom binary name', ['/opt/haproxy-2.8/sbin/haproxy-2.8', '-f', `${RUN}/haproxy.cfg`], true],
    ['another run directory', ['haproxy', '-W', '-S', '/var/lib/hc/haproxy-connect-Zz99Yy/master.sock', '-f', '/var/lib/hc/haproxy-connect-Zz99Yy/haproxy.cfg'], false],
    ['a directory that only shares the prefix', ['haproxy', '-f', `${RUN}x/haproxy.cfg`], false],
    ['a file below the run directory, not in it', ['haproxy', '-f', `${RUN}/sub/haproxy.cfg`], false],
    ['a path that climbs out with ..', ['haproxy', '-f', `${RUN}/../haproxy-connect-other/haproxy.cfg`], false],
    ['a relative config path', ['haproxy', '-f', 'haproxy.cfg'], false],
    ['the config in the run directory but the master socket elsewhere', ['haproxy', '-S', '/tmp/master.sock', '-f', `${RUN}/haproxy.cfg`], false],
    ['no -f and no -S', ['haproxy', '-v'], false],
    ['not an haproxy (a daemon naming the base path)', ['node', 'cli.js', '-haproxy-cfg-base-path', RUN, '-f', `${RUN}/haproxy.cfg`], false],
    ['an empty command line (a kernel thread)', [], false],
  ];
  for (const [name, argv, expected] of cases) {
    test(name, () => assert.equal(isHaproxyOfRunDir(argv, RUN), expected));
  }

  const apiCases: Array<[string, string[], boolean]> = [
    ['a Data Plane API of the run directory', ['/opt/bin/dataplaneapi', '-f', `${RUN}/dataplaneapi.yaml`], true],
    ['a Data Plane API of another run directory', ['dataplaneapi', '-f', '/var/lib/hc/haproxy-connect-Zz99Yy/dataplaneapi.yaml'], false],
    ['another file of the run directory', ['dataplaneapi', '-f', `${RUN}/haproxy.cfg`], false],
    ['a relative path', ['dataplaneapi', '-f', 'dataplaneapi.yaml'], false],
    ['no -f', ['dataplaneapi', `${RUN}/dataplaneapi.yaml`], false],
  ];
  for (const [name, argv, expected] of apiCases) {
    test(name, () => assert.equal(isDataplaneApiOfRunDir(argv, RUN), expected));
  }

  test('-S keeps only the path before its options', () => {
    assert.deepEqual(haproxyPaths(['haproxy', '-W', '-S', '/r/master.sock,mode,600', '-f', '/r/haproxy.cfg']), ['/r/master.sock', '/r/haproxy.cfg']);
  });

  test('/proc/<pid>/cmdline splits on NUL', () => {
    assert.deepEqual(parseCmdline(Buffer.from('haproxy\0-f\0/r/h.cfg\0')), ['haproxy', '-f', '/r/h.cfg']);
    assert.deepEqual(parseCmdline(''), []);
  });
});

describe('which run directories may be removed', () => {
  const cases: Array<[string, string, string, boolean]> = [
    ['directly under the base, with the prefix', `/var/lib/hc/${RUN_DIR_PREFIX}Ab12Cd`, '/var/lib/hc', true],
    ['a base given with a trailing slash', `/var/lib/hc/${RUN_DIR_PREFIX}Ab12Cd`, '/var/lib/hc/', true],
    ['the prefix alone', `/var/lib/hc/${RUN_DIR_PREFIX}`, '/var/lib/hc', false],
    ['another prefix', '/var/lib/hc/data', '/var/lib/hc', false],
    ['nested deeper', `/var/lib/hc/x/${RUN_DIR_PREFIX}Ab12Cd`, '/var/lib/hc', false],
    ['outside the base', `/etc/${RUN_DIR_PREFIX}Ab12Cd`, '/var/lib/hc', false],
    ['climbing out with ..', `/var/lib/hc/../${RUN_DIR_PREFIX}Ab12Cd`, '/var/lib/hc', false],
    ['relative', `${RUN_DIR_PREFIX}Ab12Cd`, '.', false],
    ['the base itself', '/var/lib/hc', '/var/lib/hc', false],
    ['the root', '/', '/', false],
  ];
  for (const [name, runDir, baseDir, expected] of cases) {
    test(name, () => assert.equal(isRunDirUnder(runDir, baseDir), expected));
  }
});

describe('recognising the recorded daemon', () => {
  const argv = ['/usr/bin/node', '/usr/lib/haproxy-connect/dist/cli.js', '-sidecar-for', 'web'];
  const recorded = { pid: 4242, startTime: '123456', cmdlineSha256: cmdlineHash(argv) };
  test('same start time and command line: it is the daemon', () => assert.equal(isRecordedDaemon(recorded, { startTime: '123456', cmdline: argv }), true));
  test('a reused pid (another start time): not the daemon', () => assert.equal(isRecordedDaemon(recorded, { startTime: '999999', cmdline: argv }), false));
  test('another command line (same start time): not the daemon', () => assert.equal(isRecordedDaemon(recorded, { startTime: '123456', cmdline: [...argv.slice(0, 3), 'api'] }), false));
  test('gone: not the daemon', () => assert.equal(isRecordedDaemon(recorded, { startTime: undefined, cmdline: undefined }), false));
  test('alive but its command line unreadable: counted as the daemon (refusing is safe)', () => assert.equal(isRecordedDaemon(recorded, { startTime: '123456', cmdline: undefined }), true));
  test('the hash covers argument boundaries', () => assert.notEqual(cmdlineHash(['a', 'b']), cmdlineHash(['ab'])));
  test('our own /proc entries are readable', () => {
    assert.match(procStat('self')?.startTime ?? '', /^\d+$/);
    assert.ok((procCmdline('self') ?? []).length > 0);
  });
});

describe('the owner record file', () => {
  test('its name: the proxy ID made safe, plus a hash of the exact ID', () => {
    assert.match(ownerRecordName('web-sidecar-proxy'), /^haproxy-connect\.owner\.web-sidecar-proxy\.[0-9a-f]{12}\.json$/);
    assert.match(ownerRecordName('../../etc/passwd'), /^haproxy-connect\.owner\._etc_passwd\.[0-9a-f]{12}\.json$/);
    assert.notEqual(ownerRecordName('a/b'), ownerRecordName('a_b'));
    assert.ok(ownerRecordName('x'.repeat(1000)).length < 120);
    assert.equal(path.dirname(ownerRecordPath('/var/lib/hc/', 'web')), '/var/lib/hc');
  });

  test('created only if absent (0600), replaced atomically, removed only if unchanged', async () => {
    const dir = await fs.mkdtemp(path.join(base, 'record-'));
    const file = path.join(dir, ownerRecordName('web'));
    const record: OwnerRecord = { version: 1, proxyId: 'web', daemon: { pid: 1, startTime: '1', cmdlineSha256: 'x' }, updatedAt: new Date().toISOString() };
    assert.equal(await createOwnerRecord(file, record), true);
    assert.equal(await createOwnerRecord(file, { ...record, proxyId: 'other' }), false);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    const first = await readOwnerRecord(file);
    assert.equal(first.kind, 'valid');
    await replaceOwnerRecord(file, { ...record, runDir: '/x', haproxyMasterPid: 7 });
    const second = await readOwnerRecord(file);
    assert.ok(second.kind === 'valid' && second.record.haproxyMasterPid === 7);
    assert.equal(await removeOwnerRecordIf(file, first.kind === 'valid' ? first.bytes : Buffer.alloc(0)), false, 'changed since read: kept');
    assert.equal(await removeOwnerRecordIf(file, second.kind === 'valid' ? second.bytes : Buffer.alloc(0)), true);
    assert.deepEqual(
      (await fs.readdir(dir)).filter((n) => n.includes('.tmp-')),
      [],
      'no temp file left',
    );
  });

  test('garbage is reported as invalid; a symlink is refused', async () => {
    const dir = await fs.mkdtemp(path.join(base, 'record-'));
    const file = path.join(dir, ownerRecordName('web'));
    await fs.writeFile(file, '{"version":2}', { mode: 0o600 });
    const read = await readOwnerRecord(file);
    assert.equal(read.kind, 'invalid');
    await fs.rm(file);
    await fs.symlink('/etc/hostname', file);
    await assert.rejects(readOwnerRecord(file), (err) => isHaproxyConnectError(err, 'CONFIG_INVALID') && /symbolic link/.test(err.message));
  });
});

// ---------------------------------------------------------------------------------------------
// Real processes.

/** A real HAProxy master-worker in a new run directory under `baseDir`, detached like ours; reloaded once when asked. */
async function orphanHaproxy(baseDir: string, reload = false): Promise<{ runDir: string; master: number; workers: number[] }> {
  const runDir = await fs.mkdtemp(path.join(baseDir, RUN_DIR_PREFIX));
  await fs.writeFile(path.join(runDir, 'haproxy.cfg'), tinyHaproxyConfig(runDir, { global: [`stats socket ${runDir}/admin.sock mode 600 level admin expose-fd listeners`, 'noreuseport'] }));
  // A private key sits in a real run directory: the removal must take it too.
  await fs.writeFile(path.join(runDir, 'leaf.pem'), 'PRIVATE KEY', { mode: 0o600 });
  const masterSocket = path.join(runDir, 'master.sock');
  const child = spawn(HAPROXY_BIN, ['-W', '-S', `${masterSocket},mode,600`, '-f', path.join(runDir, 'haproxy.cfg')], { cwd: runDir, detached: true, stdio: 'ignore' });
  child.unref();
  const master = child.pid as number;
  started.add(master);
  const workers = async (): Promise<number[] | undefined> => {
    const proc = parseShowProc(await sendCommand(masterSocket, 'show proc', { timeoutMs: 2_000 }));
    const current = proc.workers.filter((w) => !w.old).map((w) => w.pid);
    return current.length > 0 ? current : undefined;
  };
  let pids = await waitFor('the orphan haproxy to run a worker', workers, 10_000, 25);
  if (reload) {
    const before = new Set(pids);
    await sendCommand(masterSocket, 'reload', { timeoutMs: 2_000 }).catch(() => '');
    pids = await waitFor(
      'a new worker after the reload',
      async () => {
        const now = await workers();
        return now?.some((p) => !before.has(p)) ? now : undefined;
      },
      10_000,
      25,
    );
  }
  for (const pid of pids) started.add(pid);
  return { runDir, master, workers: pids };
}

/** A pid that has exited (a finished child of ours). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

async function writeRecord(baseDir: string, proxyId: string, record: Partial<OwnerRecord>): Promise<string> {
  const file = ownerRecordPath(baseDir, proxyId);
  await replaceOwnerRecord(file, { version: 1, proxyId, daemon: { pid: 1, startTime: '0', cmdlineSha256: 'none' }, updatedAt: new Date().toISOString(), ...record });
  return file;
}

describe('claiming a proxy with real processes', () => {
  test('no record: claimed; a second claim while held is SIDECAR_ALREADY_RUNNING; release removes the record', async () => {
    const baseDir = await fs.mkdtemp(path.join(base, 'claim-'));
    const logs = captureLogs('debug');
    const claim = await claimSidecar({ baseDir, proxyId: 'web-sidecar-proxy', logger: logs.logger });
    const runDir = await claim.createRunDir();
    assert.ok(isRunDirUnder(runDir, baseDir), runDir);
    assert.equal((await fs.stat(runDir)).mode & 0o777, 0o700);
    claim.haproxyStarted(4242);
    await assert.rejects(
      claimSidecar({ baseDir, proxyId: 'web-sidecar-proxy', logger: logs.logger }),
      (err) => isHaproxyConnectError(err, 'SIDECAR_ALREADY_RUNNING') && err.message.includes(`pid ${process.pid} (this process)`) && err.message.includes('web-sidecar-proxy'),
    );
    assert.ok(existsSync(runDir), 'a refused claim touches nothing');
    const read = await readOwnerRecord(claim.file);
    assert.ok(read.kind === 'valid');
    assert.equal(read.record.runDir, runDir);
    assert.equal(read.record.daemon.pid, process.pid);
    await claim.release();
    assert.equal(existsSync(claim.file), false);
    // Another proxy ID is another record: both can be held at once.
    const a = await claimSidecar({ baseDir, proxyId: 'a', logger: logs.logger });
    const b = await claimSidecar({ baseDir, proxyId: 'b', logger: logs.logger });
    await a.release();
    await b.release();
    await fs.rm(runDir, { recursive: true });
  });

  test('a live daemon (same pid, start time and command line) is refused and nothing of it is touched', async () => {
    const baseDir = await fs.mkdtemp(path.join(base, 'live-'));
    const daemon: ChildProcess = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'haproxy-connect', '-sidecar-for', 'web'], { stdio: 'ignore' });
    const pid = daemon.pid as number;
    started.add(pid);
    try {
      const argv = await waitFor(
        'the daemon stand-in to exec',
        async () => {
          const cmd = procCmdline(pid);
          return cmd?.includes('haproxy-connect') ? cmd : undefined;
        },
        5_000,
        10,
      );
      const orphan = await orphanHaproxy(baseDir);
      const daemonRecord = { pid, startTime: procStat(pid)?.startTime as string, cmdlineSha256: cmdlineHash(argv) };
      await writeRecord(baseDir, 'web', { daemon: daemonRecord, runDir: orphan.runDir, haproxyMasterPid: orphan.master });
      const logs = captureLogs('debug');
      await assert.rejects(claimSidecar({ baseDir, proxyId: 'web', logger: logs.logger }), (err) => isHaproxyConnectError(err, 'SIDECAR_ALREADY_RUNNING') && err.message.includes(`pid ${pid} `));
      assert.ok(isAlive(orphan.master) && orphan.workers.every(isAlive), "the live daemon's haproxy keeps running");
      assert.ok(existsSync(orphan.runDir));

      // The same pid with another command line is a reused pid: the record is stale.
      await writeRecord(baseDir, 'web', { daemon: { ...daemonRecord, cmdlineSha256: cmdlineHash(['bash']) }, runDir: orphan.runDir, haproxyMasterPid: orphan.master });
      const claim = await claimSidecar({ baseDir, proxyId: 'web', logger: logs.logger, termTimeoutMs: 2_000 });
      assert.ok(!isAlive(orphan.master) && !orphan.workers.some(isAlive));
      assert.equal(existsSync(orphan.runDir), false);
      await claim.release();
    } finally {
      daemon.kill('SIGKILL');
    }
  });

  test("a dead daemon's reloaded haproxy is stopped (master and workers, by pid), its run directory removed, a bystander untouched", async () => {
    const baseDir = await fs.mkdtemp(path.join(base, 'dead-'));
    const orphan = await orphanHaproxy(baseDir, true);
    const bystander = await orphanHaproxy(baseDir);
    // As the supervisor spawns it, and as 2.6.12 re-executes it: the workers carry -sf/-x.
    const found = findRunDirHaproxy(orphan.runDir, orphan.master);
    assert.deepEqual(
      found.filter((p) => p.role === 'master').map((p) => p.pid),
      [orphan.master],
    );
    assert.deepEqual(
      found
        .filter((p) => p.role === 'worker')
        .map((p) => p.pid)
        .sort(),
      [...orphan.workers].sort(),
    );
    assert.ok(
      found.every((p) => p.pgrp === orphan.master),
      "all in the master's process group",
    );
    assert.ok(
      orphan.workers.every((w) => procCmdline(w)?.includes('-sf')),
      `reloaded worker cmdline: ${procCmdline(orphan.workers[0] as number)?.join(' ')}`,
    );

    const file = await writeRecord(baseDir, 'web-sidecar-proxy', { daemon: { pid: await deadPid(), startTime: '1', cmdlineSha256: 'x' }, runDir: orphan.runDir, haproxyMasterPid: orphan.master });
    const logs = captureLogs('debug');
    const claim = await claimSidecar({ baseDir, proxyId: 'web-sidecar-proxy', logger: logs.logger });
    try {
      assert.ok(!isAlive(orphan.master), 'orphan master still running');
      assert.deepEqual(orphan.workers.filter(isAlive), [], 'orphan workers still running');
      assert.equal(existsSync(orphan.runDir), false, 'old run directory left behind');
      assert.ok(isAlive(bystander.master) && bystander.workers.every(isAlive), 'the bystander haproxy was touched');
      assert.ok(existsSync(bystander.runDir));
      const msgs = logs.lines.map((l) => l.msg);
      const stopping = logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('stopping the haproxy left running'));
      assert.deepEqual(stopping?.masters, [orphan.master]);
      assert.deepEqual(stopping?.workers, orphan.workers);
      assert.equal(stopping?.runDir, orphan.runDir);
      assert.ok(msgs.includes('stopped the orphaned haproxy'), JSON.stringify(msgs));
      assert.ok(logs.find((l) => l.msg === 'removed the run directory of the previous run' && l.runDir === orphan.runDir));
      const read = await readOwnerRecord(file);
      assert.ok(read.kind === 'valid' && read.record.daemon.pid === process.pid, 'the record is ours now');
    } finally {
      await claim.release();
    }
  });

  test('a recorded master pid that is not an haproxy of the run directory is left alone; a run directory outside the base is kept', async () => {
    const baseDir = await fs.mkdtemp(path.join(base, 'decoy-'));
    const elsewhere = await fs.mkdtemp(path.join(base, RUN_DIR_PREFIX));
    const bystander = await orphanHaproxy(baseDir);
    const logs = captureLogs('debug');
    // The recorded master is the bystander's (another run directory): a pid that was reused.
    const recordedRun = path.join(baseDir, `${RUN_DIR_PREFIX}gone00`);
    await writeRecord(baseDir, 'web', { daemon: { pid: await deadPid(), startTime: '1', cmdlineSha256: 'x' }, runDir: recordedRun, haproxyMasterPid: bystander.master });
    const claim = await claimSidecar({ baseDir, proxyId: 'web', logger: logs.logger });
    assert.ok(isAlive(bystander.master), 'a process of another run directory was stopped');
    assert.ok(logs.find((l) => l.msg === 'the recorded haproxy master of the previous run is not running' && l.pid === bystander.master));
    await claim.release();

    await writeRecord(baseDir, 'web', { daemon: { pid: await deadPid(), startTime: '1', cmdlineSha256: 'x' }, runDir: elsewhere });
    const again = await claimSidecar({ baseDir, proxyId: 'web', logger: logs.logger });
    assert.ok(existsSync(elsewhere), 'a directory outside the base path was removed');
    assert.ok(logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('not removing the recorded run directory')));
    await again.release();
  });

  test('an unreadable record is replaced without touching anything', async () => {
    const baseDir = await fs.mkdtemp(path.join(base, 'garbage-'));
    await fs.writeFile(ownerRecordPath(baseDir, 'web'), 'not json', { mode: 0o600 });
    const logs = captureLogs('debug');
    const claim = await claimSidecar({ baseDir, proxyId: 'web', logger: logs.logger });
    assert.ok(logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('replacing an owner record that cannot be read')));
    await claim.release();
    assert.equal(existsSync(claim.file), false);
  });
});
