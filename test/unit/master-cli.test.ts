import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHaproxyConnectError } from '../../src/errors.js';
import { parseReloadAnswer, parseShowProc, reloadOutcome, sendCommand, type ShowProc } from '../../src/driver/master-cli.js';

// Captured from HAProxy 2.6.12 (show proc after one good and one failed reload).
const SHOW_PROC_FAILED = [
  '#<PID>          <type>          <reloads>       <uptime>        <version>      ',
  '6489            master          2 [failed: 1]   0d00h10m18s     2.6.12-1+deb12u4',
  '# workers',
  '15090           worker          1               0d00h00m02s     2.6.12-1+deb12u4',
  '# programs',
  '',
  '',
].join('\n');

// The example from management.txt (section 9.4.1), with old workers and programs.
const SHOW_PROC_DOC = [
  '#<PID>          <type>          <reloads>       <uptime>        <version>',
  '1162            master          5 [failed: 0]   0d00h02m07s     2.5-dev13',
  '# workers',
  '1271            worker          1               0d00h00m00s     2.5-dev13',
  '# old workers',
  '1233            worker          3               0d00h00m43s     2.0-dev3-6019f6-289',
  '# programs',
  '1244            foo             0               0d00h00m00s     -',
  '1255            bar             0               0d00h00m00s     -',
].join('\n');

describe('parseShowProc', () => {
  test('2.6.12 output after a failed reload', () => {
    const proc = parseShowProc(SHOW_PROC_FAILED);
    assert.deepEqual(proc.master, {
      pid: 6489,
      reloads: 2,
      failedReloads: 1,
      uptime: '0d00h10m18s',
      version: '2.6.12-1+deb12u4',
    });
    assert.deepEqual(proc.workers, [{ pid: 15090, reloads: 1, uptime: '0d00h00m02s', version: '2.6.12-1+deb12u4', old: false }]);
  });

  test('old workers are flagged, programs are ignored', () => {
    const proc = parseShowProc(SHOW_PROC_DOC);
    assert.equal(proc.master.failedReloads, 0);
    assert.deepEqual(
      proc.workers.map((w) => [w.pid, w.old]),
      [
        [1271, false],
        [1233, true],
      ],
    );
  });

  test('a master line without [failed: N] parses with failedReloads undefined', () => {
    const proc = parseShowProc('#<PID> <type> <reloads> <uptime> <version>\n10 master 0 0d00h00m01s 2.4.0\n# workers\n11 worker 0 0d00h00m01s 2.4.0\n');
    assert.equal(proc.master.failedReloads, undefined);
    assert.equal(proc.workers.length, 1);
  });

  test('garbage and missing master are HAPROXY_CLI errors', () => {
    assert.throws(
      () => parseShowProc('Unknown command\n'),
      (e) => isHaproxyConnectError(e, 'HAPROXY_CLI'),
    );
    assert.throws(
      () => parseShowProc('# workers\n'),
      (e) => isHaproxyConnectError(e, 'HAPROXY_CLI'),
    );
  });
});

describe('sendCommand', () => {
  let dir: string;
  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();

  async function listen(socketPath: string, onConnection: (s: net.Socket) => void): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      onConnection(s);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  }

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-cli-'));
    // Like the master CLI: read one line, answer once the client half-closes, then close.
    await listen(path.join(dir, 'answer.sock'), (s) => {
      let input = '';
      s.on('data', (d) => (input += d.toString()));
      s.on('end', () => s.end(`got ${JSON.stringify(input)}\n`));
    });
    // Never answers, never closes.
    await listen(path.join(dir, 'silent.sock'), () => undefined);
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('writes the command with a newline, half-closes, reads until close', async () => {
    assert.equal(await sendCommand(path.join(dir, 'answer.sock'), 'show proc'), 'got "show proc\\n"\n');
  });

  test('a peer that never closes times out with HAPROXY_CLI naming socket and command', async () => {
    const sock = path.join(dir, 'silent.sock');
    await assert.rejects(sendCommand(sock, 'show info', { timeoutMs: 100 }), (e) => {
      assert.ok(isHaproxyConnectError(e, 'HAPROXY_CLI'));
      assert.match(e.message, /show info/);
      assert.ok(e.message.includes(sock));
      return true;
    });
  });

  test('a missing socket is HAPROXY_CLI', async () => {
    const sock = path.join(dir, 'missing.sock');
    await assert.rejects(sendCommand(sock, 'reload'), (e) => isHaproxyConnectError(e, 'HAPROXY_CLI') && e.message.includes(sock));
  });

  test('abort rejects with ABORTED, before and during the call', async () => {
    await assert.rejects(sendCommand(path.join(dir, 'answer.sock'), 'x', { signal: AbortSignal.abort() }), (e) => isHaproxyConnectError(e, 'ABORTED'));
    const ac = new AbortController();
    const pending = sendCommand(path.join(dir, 'silent.sock'), 'x', { signal: ac.signal, timeoutMs: 5_000 });
    ac.abort();
    await assert.rejects(pending, (e) => isHaproxyConnectError(e, 'ABORTED'));
  });

  test('a command containing a newline is refused', async () => {
    await assert.rejects(sendCommand(path.join(dir, 'answer.sock'), 'show proc\nreload'), (e) => isHaproxyConnectError(e, 'HAPROXY_CLI'));
  });
});

describe('reloadOutcome', () => {
  const proc = (reloads: number, failed: number | undefined, workers: Array<[number, boolean]>): ShowProc =>
    parseShowProc(
      [
        '#<PID>          <type>          <reloads>       <uptime>        <version>',
        `100             master          ${reloads}${failed === undefined ? '' : ` [failed: ${failed}]`}     0d00h00m10s     2.6.12`,
        '# workers',
        ...workers.filter(([, old]) => !old).map(([pid]) => `${pid}             worker          0               0d00h00m01s     2.6.12`),
        '# old workers',
        ...workers.filter(([, old]) => old).map(([pid]) => `${pid}             worker          1               0d00h00m09s     2.6.12`),
        '# programs',
        '',
      ].join('\n'),
    );
  const before = proc(1, 0, [[200, false]]);

  test('pending until the reload counter moves', () => {
    assert.deepEqual(reloadOutcome(before, proc(1, 0, [[200, false]])), { kind: 'pending' });
  });
  test('reloaded when a new current worker is there (the old one finishing)', () => {
    assert.deepEqual(
      reloadOutcome(
        before,
        proc(2, 0, [
          [300, false],
          [200, true],
        ]),
      ),
      { kind: 'reloaded', workers: [300], reloads: 2 },
    );
  });
  test('rejected when [failed: N] went up, even if the counter moved', () => {
    assert.deepEqual(reloadOutcome(before, proc(2, 1, [[200, false]])), { kind: 'rejected', failedReloads: 1 });
  });
  test('counter moved, no new worker yet: pending with [failed: N], no-new-worker without it', () => {
    assert.deepEqual(reloadOutcome(before, proc(2, 0, [[200, false]])), { kind: 'pending' });
    assert.deepEqual(reloadOutcome(proc(1, undefined, [[200, false]]), proc(2, undefined, [[200, false]])), { kind: 'no-new-worker' });
  });
});

describe('parseReloadAnswer', () => {
  test('2.6.12 answers nothing', () => {
    assert.equal(parseReloadAnswer(''), undefined);
  });

  test('3.0.11: Success=1 or Success=0, then the startup log after --', () => {
    const ok = ['Success=1', '--', '[NOTICE]   (2546) : New worker (2631) forked', '[NOTICE]   (2546) : Loading success.', ''].join('\n');
    assert.deepEqual(parseReloadAnswer(ok), { success: true, log: ['[NOTICE]   (2546) : New worker (2631) forked', '[NOTICE]   (2546) : Loading success.'] });
    const refused = [
      'Success=0',
      '--',
      '[NOTICE]   (2546) : haproxy version is 3.0.11-1+deb13u4',
      "[ALERT]    (2546) : config : parsing [h.cfg:11] : unknown keyword 'bogus' in 'frontend' section",
      '[WARNING]  (2546) : Loading failure!',
      '',
    ].join('\n');
    const answer = parseReloadAnswer(refused);
    assert.equal(answer?.success, false);
    assert.equal(answer?.log.length, 3);
    assert.match(answer?.log[1] ?? '', /^\[ALERT\].*unknown keyword 'bogus'/);
  });
});
