/**
 * HAProxy's logs into the daemon: octet-counted framing, RFC 5424 parsing, the receiver on a real
 * unix socket (garbage, oversize, several connections), the access log writer (file sink, open
 * errors, DisableListenerLogs), and the daemon's text log format.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { isHaproxyConnectError } from '../../src/errors.js';
import type { AccessLogs } from '../../src/domain/snapshot.js';
import { AccessLogWriter } from '../../src/telemetry/access-log-writer.js';
import { parseAccessLine, parseListenerLine, type AccessRecord } from '../../src/telemetry/access-log-record.js';
import { defaultAccessLogFormat, parseTextFormat } from '../../src/domain/access-log-template.js';
import { HaproxyLogReceiver, MAX_CONNECTIONS, MAX_FRAME_BYTES } from '../../src/telemetry/haproxy-logs.js';
import { createLogger, formatTextLine } from '../../src/logger.js';
import { MAX_LENGTH_DIGITS, OctetCountingDecoder, levelOfSeverity, parseSyslogMessage, type DecodedItem } from '../../src/telemetry/syslog.js';
import { waitFor } from '../../devtools/ports.js';
import { captureLogs } from '../helpers/log-capture.js';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hc-logs-'));
  dirs.push(dir);
  return dir;
}

function frame(text: string): Buffer {
  const body = Buffer.from(text);
  return Buffer.concat([Buffer.from(`${body.length} `), body]);
}

function frames(items: DecodedItem[]): string[] {
  return items.flatMap((i) => (i.kind === 'frame' ? [i.text] : []));
}

const MESSAGE = '<129>1 2026-11-24T02:17:30.195302+00:00 - haproxy 15700 - - Server be/s1 is DOWN, reason: Layer4 connection problem.';
const ACCESS = '<142>1 2026-11-24T02:17:31.113507+00:00 - haproxy 15700 - - HCAL1 {"f":"fe","ts":"1795486671","ms":"059","st":"--","cl":"local_app"}';
const LISTENER = '<142>1 2026-11-24T02:18:12.263571+00:00 - haproxy 16394 - - 127.0.0.1:60834 [24/Nov/2026:02:18:12.256] public_listener/1: SSL handshake failure';

describe('OctetCountingDecoder', () => {
  test('frames split anywhere across chunks come out whole, in order', () => {
    const texts = ['a', 'é and more', 'x'.repeat(1000), MESSAGE];
    const stream = Buffer.concat(texts.map(frame));
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 20 }), (cuts) => {
        const decoder = new OctetCountingDecoder(MAX_FRAME_BYTES);
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const out: DecodedItem[] = [];
        let last = 0;
        for (const p of [...points, stream.length]) {
          out.push(...decoder.push(stream.subarray(last, p)));
          last = p;
        }
        assert.deepEqual(frames(out), texts);
      }),
    );
  });

  test('garbage where a length belongs is a framing error; the decoder stays broken', () => {
    const decoder = new OctetCountingDecoder(MAX_FRAME_BYTES);
    const out = decoder.push(Buffer.from('GET / HTTP/1.1\r\n'));
    assert.deepEqual(
      out.map((i) => i.kind === 'error' && i.error),
      ['framing'],
    );
    assert.ok(decoder.broken);
    assert.deepEqual(decoder.push(frame('later')), []);
    for (const bad of ['0 x', '012 abc', `${'9'.repeat(MAX_LENGTH_DIGITS + 1)} x`]) {
      assert.ok(
        new OctetCountingDecoder(MAX_FRAME_BYTES).push(Buffer.from(bad)).some((i) => i.kind === 'error' && i.error === 'framing'),
        bad,
      );
    }
  });

  test('an oversize frame is skipped without buffering, and the next frame is read', () => {
    const decoder = new OctetCountingDecoder(16);
    const out = decoder.push(Buffer.concat([frame('x'.repeat(100)), frame('ok')]));
    assert.deepEqual(
      out.map((i) => (i.kind === 'frame' ? i.text : i.error)),
      ['oversize', 'ok'],
    );
  });

  test('any byte string decodes or yields typed errors, never throws', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.integer({ min: 1, max: 64 }), (bytes, max) => {
        const decoder = new OctetCountingDecoder(max);
        for (const item of decoder.push(Buffer.from(bytes))) {
          if (item.kind === 'frame') assert.ok(Buffer.byteLength(item.text) <= max * 3);
          else assert.ok(['framing', 'oversize'].includes(item.error));
        }
      }),
    );
  });
});

describe('parseSyslogMessage', () => {
  test('RFC 5424 from HAProxy: facility, severity, pid, message', () => {
    assert.deepEqual(parseSyslogMessage(MESSAGE), {
      facility: 16,
      severity: 'alert',
      timestamp: '2026-11-24T02:17:30.195302+00:00',
      pid: 15700,
      message: 'Server be/s1 is DOWN, reason: Layer4 connection problem.',
    });
    assert.equal(parseSyslogMessage('<141>1 2026-11-24T02:18:40.466927+00:00 - haproxy 16686 - - 2060 events dropped\n').message, '2060 events dropped');
  });

  test('anything else is a typed error', () => {
    for (const bad of ['hello', '<999>1 t - a 1 - - m', '<13>Nov 24 legacy', '']) {
      assert.throws(() => parseSyslogMessage(bad), { name: 'SyslogParseError' }, bad);
    }
  });

  test('severities map to our levels', () => {
    assert.deepEqual((['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'] as const).map(levelOfSeverity), ['error', 'error', 'error', 'error', 'warn', 'info', 'info', 'debug']);
  });
});

describe('HaproxyLogReceiver', () => {
  async function start(): Promise<{ receiver: HaproxyLogReceiver; path: string; records: AccessRecord[]; logs: ReturnType<typeof captureLogs> }> {
    const path = join(tempDir(), 'log.sock');
    const logs = captureLogs('debug');
    const records: AccessRecord[] = [];
    const receiver = await HaproxyLogReceiver.listen({ socketPath: path, logger: logs.logger.child({ component: 'haproxy' }), onAccess: (r) => records.push(r) });
    return { receiver, path, records, logs };
  }

  function client(path: string): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect(path, () => resolve(socket));
      socket.once('error', reject);
    });
  }

  test('socket mode 600; messages become component haproxy lines; access and listener lines become records', async () => {
    const { receiver, path, records, logs } = await start();
    try {
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const socket = await client(path);
      socket.write(Buffer.concat([frame(MESSAGE), frame(ACCESS), frame(LISTENER), frame('<141>1 - - haproxy 1 - - 12 events dropped')]));
      await waitFor('the lines', async () => (records.length === 2 && logs.find((l) => l['dropped'] === 12) ? true : undefined), 5_000, 10);
      const down = logs.find((l) => String(l['msg']).startsWith('Server be/s1 is DOWN'));
      assert.ok(down);
      assert.equal(down['component'], 'haproxy');
      assert.equal(down['level'], 'error');
      assert.equal(down['severity'], 'alert');
      assert.equal(down['pid'], 15700);
      assert.deepEqual(
        records.map((r) => r.kind),
        ['connection', 'listener'],
      );
      assert.equal(receiver.stats.droppedByHaproxy, 12);
      socket.destroy();
    } finally {
      await receiver.close();
    }
  });

  test('garbage drops that connection only; bad lines are counted; other connections go on', async () => {
    const { receiver, path, records, logs } = await start();
    try {
      const good = await client(path);
      const bad = await client(path);
      const closed = new Promise((resolve) => bad.once('close', resolve));
      bad.on('error', () => {});
      bad.write('\u0000\u0001 not syslog at all');
      await closed;
      good.write(
        Buffer.concat([frame('not rfc5424'), frame('<142>1 - - haproxy 1 - - HCAL1 {"f":"fe", truncated'), frame(`<142>1 - - haproxy 1 - - HCAL1 ${'x'.repeat(MAX_FRAME_BYTES)}`), frame(ACCESS)]),
      );
      await waitFor('the access record', async () => (records.length === 1 ? true : undefined), 5_000, 10);
      assert.deepEqual(receiver.stats.errors, { framing: 1, oversize: 1, syslog: 1, access: 1 });
      assert.ok(logs.find((l) => l['msg'] === 'ignored a malformed log line from haproxy' && l['error'] === 'framing'));
      good.destroy();
    } finally {
      await receiver.close();
    }
  });

  test(`beyond ${MAX_CONNECTIONS} connections the oldest is dropped, never the newest`, async () => {
    const { receiver, path, records } = await start();
    try {
      const clients: Socket[] = [];
      for (let i = 0; i <= MAX_CONNECTIONS; i++) clients.push(await client(path));
      const first = clients[0] as Socket;
      await waitFor('the oldest connection to close', async () => (first.destroyed || first.readableEnded ? true : undefined), 5_000, 10);
      (clients.at(-1) as Socket).write(frame(ACCESS));
      await waitFor('a record from the newest connection', async () => (records.length === 1 ? true : undefined), 5_000, 10);
      for (const c of clients) c.destroy();
    } finally {
      await receiver.close();
    }
  });

  test('close removes the socket file', async () => {
    const { receiver, path } = await start();
    await receiver.close();
    assert.throws(() => statSync(path), { code: 'ENOENT' });
  });

  test('a socket path that cannot be bound is LOG_RECEIVER_FAILED', async () => {
    const path = join(tempDir(), 'missing-dir', 'log.sock');
    await assert.rejects(
      HaproxyLogReceiver.listen({ socketPath: path, logger: captureLogs().logger, onAccess: () => {} }),
      (err: unknown) => isHaproxyConnectError(err, 'LOG_RECEIVER_FAILED') && err.message.includes(path),
    );
  });
});

describe('AccessLogWriter', () => {
  const record = parseAccessLine(ACCESS.slice(ACCESS.indexOf('HCAL1')));
  const listener = parseListenerLine(LISTENER.slice(LISTENER.indexOf('127.0.0.1')));
  function settings(over: Partial<AccessLogs> = {}): AccessLogs {
    return { enabled: true, disableListenerLogs: false, sink: { type: 'stdout' }, format: defaultAccessLogFormat(), ...over };
  }

  test('file sink: one JSON line per record; probes and (with DisableListenerLogs) listener lines dropped; disabled ignores', async () => {
    const path = join(tempDir(), 'access.log');
    const writer = new AccessLogWriter({ logger: captureLogs().logger });
    await writer.configure(settings({ sink: { type: 'file', path } }));
    writer.write(record);
    assert.ok(listener);
    writer.write(listener);
    const probe = parseListenerLine('127.0.0.1:1 [24/Nov/2026:02:18:12.256] public_listener/1: Connection closed during SSL handshake');
    assert.ok(probe);
    writer.write(probe);
    await writer.configure(settings({ sink: { type: 'file', path }, disableListenerLogs: true }));
    writer.write(listener);
    await writer.configure(settings({ enabled: false }));
    writer.write(record);
    await writer.close();
    const lines = readFileSync(path, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]?.['upstream_cluster'], 'local_app');
    assert.equal(lines[1]?.['connection_termination_details'], 'SSL handshake failure');
    assert.equal(statSync(path).mode & 0o777, 0o644);
    assert.deepEqual(writer.stats, { lines: 2, ignored: 1, listenerSuppressed: 1, probes: 1, dropped: 0 });
  });

  test('a text format and a file that already exists (appended)', async () => {
    const path = join(tempDir(), 'access.log');
    const writer = new AccessLogWriter({ logger: captureLogs().logger, hostname: 'h1' });
    for (let i = 0; i < 2; i++) {
      await writer.configure(settings({ sink: { type: 'file', path }, format: { kind: 'text', parts: parseTextFormat('%HOSTNAME% %UPSTREAM_CLUSTER% %RESPONSE_CODE%\n') } }));
      writer.write(record);
      await writer.close();
    }
    assert.equal(readFileSync(path, 'utf8'), 'h1 local_app 0\nh1 local_app 0\n');
  });

  test('a file that cannot be opened is ACCESS_LOG_FAILED naming the path; the previous sink stays', async () => {
    const good = join(tempDir(), 'good.log');
    const bad = join(tempDir(), 'no-such-dir', 'access.log');
    const writer = new AccessLogWriter({ logger: captureLogs().logger });
    await writer.configure(settings({ sink: { type: 'file', path: good } }));
    await assert.rejects(
      writer.configure(settings({ sink: { type: 'file', path: bad } })),
      (err: unknown) => isHaproxyConnectError(err, 'ACCESS_LOG_FAILED') && err.message.includes(bad) && err.message.includes('ENOENT'),
    );
    writer.write(record);
    await writer.close();
    assert.equal(readFileSync(good, 'utf8').split('\n').length, 2);
  });

  test('unsupported operators are reported once per change', async () => {
    const logs = captureLogs();
    const writer = new AccessLogWriter({ logger: logs.logger });
    await writer.configure(settings({ sink: { type: 'file', path: join(tempDir(), 'a.log') }, format: { kind: 'text', parts: parseTextFormat('%ROUTE_NAME% %FILTER_STATE(x)%') } }));
    await writer.close();
    assert.deepEqual(logs.find((l) => Array.isArray(l['operators']))?.['operators'], ['FILTER_STATE', 'ROUTE_NAME']);
  });
});

describe('text log format', () => {
  test('time LEVEL component: msg key=value, quoted when needed, one line', () => {
    const line = formatTextLine(
      JSON.stringify({
        level: 'warn',
        time: '2026-01-01T00:00:00.000Z',
        app: 'haproxy-connect',
        component: 'haproxy',
        msg: 'Server a/b is DOWN\nsecond',
        pid: 7,
        reason: 'Layer4 timeout',
        ok: true,
        list: [1, 2],
      }),
    );
    assert.equal(line, '2026-01-01T00:00:00.000Z WARN  haproxy: Server a/b is DOWN\\nsecond pid=7 reason="Layer4 timeout" ok=true list=[1,2]');
    assert.equal(formatTextLine('not json'), 'not json');
  });

  test('the logger writes text lines (secrets stay redacted)', () => {
    const out: string[] = [];
    const log = createLogger(
      'info',
      {
        write: (s: string) => {
          out.push(s);
        },
      },
      'text',
    ).child({ component: 'consul' });
    log.info({ token: 'secret-token', watch: 'leaf' }, 'watch started');
    assert.equal(out.length, 1);
    assert.match(out[0] ?? '', /^\S+Z INFO {2}consul: watch started token=\[redacted\] watch=leaf\n$/);
  });
});

describe('log lines have unique keys', () => {
  for (const format of ['json', 'text'] as const) {
    test(`${format}: a field that repeats a child's binding appears once, with the call's value`, () => {
      const out: string[] = [];
      const log = createLogger(
        'info',
        {
          write: (s: string) => {
            out.push(s);
          },
        },
        format,
      ).child({ component: 'haproxy' });
      log.info({ component: 'haproxy-process', pid: 7 }, 'running -> reloading');
      log.child({ component: 'stats' }).warn('nested');
      const lines = out
        .join('')
        .split('\n')
        .filter((l) => l !== '');
      assert.equal(lines.length, 2);
      if (format === 'json') {
        for (const line of lines) {
          const keys = [...line.matchAll(/"([^"\\]+)":/g)].map((m) => m[1]);
          assert.equal(new Set(keys).size, keys.length, line);
        }
        assert.equal(JSON.parse(lines[0] as string).component, 'haproxy-process');
        assert.equal(JSON.parse(lines[1] as string).component, 'stats');
      } else {
        assert.match(lines[0] as string, / haproxy-process: running -> reloading pid=7$/);
        assert.equal((lines[0] as string).match(/component/g), null);
      }
    });
  }
});
