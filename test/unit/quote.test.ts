/**
 * quoteArg: the exact words for hostile values, what it refuses, and a differential test against
 * the real HAProxy (binary from HAPROXY_BIN, else `haproxy`): one frontend, bound on a unix socket
 * whose path is itself hostile, answers `GET /v<i>` with `http-request return ... string
 * <quoteArg(value_i)>` — a literal body, so any byte string without NUL comes back as HAProxy
 * read it — and `GET /marker` with a marker rule placed after all the values. Every config is
 * also checked with `haproxy -c`. Each value rule carries `if { path /v<i> }` after the value:
 * a value that ended the line would leave a line starting with `if` (rejected by -c), and one
 * that opened a comment would drop its condition and answer every later path. One more start pins
 * why quoteAddress exists: HAProxy expands `$` inside a quoted address.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { quoteAddress, quoteArg } from '../../src/haproxy/quote.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const READY_DEADLINE_MS = 10_000;
const POLL_INTERVAL_MS = 25;
const REQUEST_TIMEOUT_MS = 5_000;
/** fast-check batches: each batch is one config, one `haproxy -c` and one HAProxy start. */
const GENERATED_BATCHES = 3;
const VALUES_PER_BATCH = 100;
/** Set in HAProxy's environment: a `$` that escaped its quoting would expand to something else. */
const ENV_NAME = 'HC_QUOTE_TEST_VAR';
const ENV_VALUE = 'expanded-from-the-environment';
const MARKER_PATH = '/marker';

const execFileAsync = promisify(execFile);

describe('quoteArg renderings', () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    // Safe values stay bare: every name and path in today's golden configs.
    ['abc', 'abc'],
    ['/run/haproxy-connect/upstream_api.sock', '/run/haproxy-connect/upstream_api.sock'],
    ['unix@/tmp/a-b_c.d+e:f@g.sock', 'unix@/tmp/a-b_c.d+e:f@g.sock'],
    ['%[path],lower(){}[]|<>?;&!*=~^`', '%[path],lower(){}[]|<>?;&!*=~^`'],
    // Single quotes: no interpretation at all inside.
    ['a b', "'a b'"],
    [' ', "' '"],
    ['a#b', "'a#b'"],
    ['#', "'#'"],
    ['$HOME', "'$HOME'"],
    ['${X}', "'${X}'"],
    ['$', "'$'"],
    ['say "hi"', `'say "hi"'`],
    ['"', `'"'`],
    ['C:\\dir\\n', "'C:\\dir\\n'"],
    ['\\', "'\\'"],
    ['^/api/(v1|v2)$', "'^/api/(v1|v2)$'"],
    ['é', "'é'"],
    ['naïve café 😀', "'naïve café 😀'"],
    ['\u00a0\u0085\u2028', "'\u00a0\u0085\u2028'"],
    // Double quotes: for a single quote or a control character; `\ " $` escaped there.
    ["'", `"'"`],
    ["it's", `"it's"`],
    ['it\'s $5 \\ "x" #1', `"it's \\$5 \\\\ \\"x\\" #1"`],
    ["'${X}'", `"'\\\${X}'"`],
    ['a\nb', '"a\\nb"'],
    ['a\r\nb', '"a\\r\\nb"'],
    ['a\tb', '"a\\tb"'],
    ['\v\f', '"\\x0b\\x0c"'],
    ['\x01\x1b\x7f', '"\\x01\\x1b\\x7f"'],
    ['é\n', '"é\\n"'],
  ];

  for (const [value, word] of cases) {
    test(`${JSON.stringify(value)} -> ${word}`, () => {
      assert.equal(quoteArg(value), word);
    });
  }

  const refused: ReadonlyArray<readonly [string, string, string]> = [
    ['', 'the empty string', 'end of the arguments'],
    ['a\0b', 'a NUL character', 'NUL character'],
    ['x\ud800y', 'a lone high surrogate', 'lone UTF-16 surrogate'],
    ['\udc00', 'a lone low surrogate', 'lone UTF-16 surrogate'],
  ];
  for (const [value, what, reason] of refused) {
    test(`refuses ${what} with MODEL_INVALID naming the value`, () => {
      assert.throws(
        () => quoteArg(value),
        (err: unknown) => {
          assert.ok(isHaproxyConnectError(err, 'MODEL_INVALID'), `expected MODEL_INVALID, got ${String(err)}`);
          assert.ok(err.message.includes(JSON.stringify(value)), err.message);
          assert.ok(err.message.includes(reason), err.message);
          return true;
        },
      );
    });
  }

  test('quoteAddress refuses $ and , and otherwise quotes like quoteArg', () => {
    assert.equal(quoteAddress('unix@/run/haproxy-connect/upstream_api.sock'), 'unix@/run/haproxy-connect/upstream_api.sock');
    assert.equal(quoteAddress('127.0.0.1:9191'), '127.0.0.1:9191');
    assert.equal(quoteAddress("unix@/run/my app/it's.sock"), `"unix@/run/my app/it's.sock"`);
    for (const [address, reason] of [
      ['unix@/run/$HOME/a.sock', "expands '$'"],
      ['unix@/run/a$/b.sock', "expands '$'"],
      ['unix@/run/a.sock,127.0.0.1:9000', "',' separates listeners"],
    ] as const) {
      assert.throws(
        () => quoteAddress(address),
        (err: unknown) => isHaproxyConnectError(err, 'MODEL_INVALID') && err.message.includes(address) && err.message.includes(reason),
      );
    }
    assert.throws(
      () => quoteAddress(''),
      (err: unknown) => isHaproxyConnectError(err, 'MODEL_INVALID'),
    );
  });

  test('a long refused value is shown shortened', () => {
    assert.throws(
      () => quoteArg(`${'a'.repeat(500)}\0`),
      (err: unknown) => err instanceof Error && err.message.length < 300,
    );
  });

  test('any carryable string gives one word on one line, bare exactly when it is safe', () => {
    fc.assert(
      fc.property(carryableValue(64), (value) => {
        const word = quoteArg(value);
        assert.doesNotMatch(word, /[\r\n\0]/);
        assert.equal(word, quoteArg(value));
        assert.equal(word === value, /^[\x21\x25\x26\x28-\x5b\x5d-\x7e]+$/.test(value));
      }),
      { numRuns: 500 },
    );
  });
});

describe('quoteArg against real HAProxy (return-string sink on a hostile unix socket path)', () => {
  let dir = '';
  let socketPath = '';
  const running = new Set<ChildProcess>();

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'hc-quote-'));
    // Everything a path may hold except `/`, NUL, and what quoteAddress refuses (`$` and `,`).
    const hostileDir = join(dir, `we ird #x'"\\é\t\n{}%`);
    mkdirSync(hostileDir);
    socketPath = join(hostileDir, 'fe.sock');
  });

  after(async () => {
    for (const haproxy of running) await stopHaproxy(haproxy, running);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writes and checks the config for `values`, starts HAProxy and returns the mismatches. */
  async function roundTrip(values: readonly string[]): Promise<string[]> {
    const marker = `marker-after-${values.length}-values`;
    const cfgPath = join(dir, 'haproxy.cfg');
    writeFileSync(cfgPath, sinkConfig(socketPath, values, marker));
    const env = { ...process.env, [ENV_NAME]: ENV_VALUE };
    const check = await execFileAsync(HAPROXY_BIN, ['-c', '-f', cfgPath], { env, encoding: 'latin1' }).catch((err: { stdout?: string; stderr?: string }) => {
      throw new Error(`haproxy -c rejected the config:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    assert.doesNotMatch(`${check.stdout}${check.stderr}`, /\[(WARNING|ALERT)\]/);

    const haproxy = startHaproxy(cfgPath, env, running);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await waitUntilListening(socketPath, haproxy);
      const mismatches: string[] = [];
      for (const [index, value] of values.entries()) {
        const body = await get(agent, socketPath, `/v${index}`);
        const expected = Buffer.from(value, 'utf8');
        if (!body.equals(expected)) {
          mismatches.push(`${JSON.stringify(value)} written as ${quoteArg(value)} came back as ${JSON.stringify(body.toString('latin1'))}`);
        }
      }
      assert.equal((await get(agent, socketPath, MARKER_PATH)).toString(), marker, 'the rule after the values was not parsed');
      return mismatches;
    } finally {
      agent.destroy();
      await stopHaproxy(haproxy, running);
    }
  }

  test('every ASCII character alone and inside a word, and some non-ASCII, come back byte for byte', async () => {
    const values: string[] = [];
    for (let code = 1; code < 0x80; code++) {
      const char = String.fromCharCode(code);
      values.push(char, `a${char}b`, `${char}${char}`);
    }
    values.push(
      'é',
      '\u00a0',
      '\u0085',
      '\u2028',
      '\ufeff',
      '\ufffd',
      '€',
      '😀',
      'naïve café',
      '\u00ff\u0080',
      '$HOME',
      '${HOME}',
      `$${ENV_NAME}`,
      `\${${ENV_NAME}}`,
      `\${${ENV_NAME}[*]}`,
      `"\${${ENV_NAME}-x}"`,
      'it\'s $5 \\ "x" #1',
      "'\n'",
      '\\x41\\n\\t\\\\',
      '\\',
      '\\\\',
      ' leading',
      'trailing ',
      '# comment',
      '"unbalanced',
      "'unbalanced",
      'a\r\nb',
      '\\\n',
      'if { path /v0 }',
      '\n    http-request return status 500',
    );
    assert.deepEqual(await roundTrip(values), []);
  });

  test('HAProxy expands $ inside a quoted address (why quoteAddress refuses it)', async () => {
    const plain = join(dir, 'env');
    mkdirSync(plain);
    const cfgPath = join(dir, 'address.cfg');
    const written = `unix@${plain}$${ENV_NAME}_UNSET/fe.sock`;
    writeFileSync(
      cfgPath,
      [
        'defaults',
        '    mode tcp',
        '    timeout connect 1s',
        '    timeout client 5s',
        '    timeout server 5s',
        'frontend f',
        `    bind ${quoteArg(written)}`,
        '    tcp-request connection reject',
        '',
      ].join('\n'),
    );
    const haproxy = startHaproxy(cfgPath, process.env, running);
    try {
      await waitUntilListening(join(plain, 'fe.sock'), haproxy);
      assert.equal(existsSync(written.slice('unix@'.length)), false);
    } finally {
      await stopHaproxy(haproxy, running);
    }
  });

  test('fast-check: generated values come back byte for byte, and the marker after them is parsed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(carryableValue(24), { minLength: VALUES_PER_BATCH, maxLength: VALUES_PER_BATCH }), async (values) => {
        assert.deepEqual(await roundTrip(values), []);
      }),
      // One HAProxy start per run; the mismatch list already names each failing value.
      { numRuns: GENERATED_BATCHES, endOnFailure: true },
    );
  });
});

/** Characters that have a meaning somewhere in haproxy.cfg, mixed with any code point. */
const HOSTILE_UNITS = [
  ' ',
  '\t',
  '\n',
  '\r',
  '\v',
  '\f',
  '"',
  "'",
  '\\',
  '#',
  '$',
  '{',
  '}',
  '[',
  ']',
  '(',
  ')',
  ',',
  '%',
  '`',
  '-',
  '\x01',
  '\x1b',
  '\x7f',
  'é',
  '\u00a0',
  '\u0085',
  '\u2028',
  '😀',
  '$HOME',
  `\${${ENV_NAME}}`,
  `$${ENV_NAME}`,
  '\\x41',
  '\\n',
  '\\"',
  "\\'",
  '\\$',
  '\\#',
  '\\ ',
];

/** Non-empty strings without NUL and without lone surrogates: everything quoteArg accepts. */
function carryableValue(maxLength: number): fc.Arbitrary<string> {
  const unit = fc.oneof(fc.constantFrom(...HOSTILE_UNITS), fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
  return fc.string({ unit, minLength: 1, maxLength }).filter((value) => !value.includes('\0'));
}

function sinkConfig(socketPath: string, values: readonly string[], marker: string): string {
  return [
    'global',
    '    nbthread 1',
    'defaults',
    '    mode http',
    '    timeout connect 1s',
    '    timeout client 5s',
    '    timeout server 5s',
    'frontend sink',
    `    bind ${quoteArg(`unix@${socketPath}`)}`,
    ...values.map((value, index) => `    http-request return status 200 content-type application/octet-stream string ${quoteArg(value)} if { path /v${index} }`),
    `    http-request return status 200 content-type text/plain string ${marker} if { path ${MARKER_PATH} }`,
    '    http-request return status 404',
    '',
  ].join('\n');
}

/** `haproxy -db` in the foreground, as a child of this test; its stderr is kept for failure messages. */
function startHaproxy(cfgPath: string, env: NodeJS.ProcessEnv, running: Set<ChildProcess>): ChildProcess {
  const haproxy = spawn(HAPROXY_BIN, ['-db', '-f', cfgPath], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(haproxy);
  haproxy.stderr?.on('data', (chunk: Buffer) => stderrOf.set(haproxy, `${stderrOf.get(haproxy) ?? ''}${chunk.toString('latin1')}`));
  return haproxy;
}

const stderrOf = new WeakMap<ChildProcess, string>();

async function waitUntilListening(path: string, haproxy: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (connected) return;
    if (Date.now() > deadline || haproxy.exitCode !== null) throw new Error(`haproxy did not listen on ${JSON.stringify(path)}:\n${stderrOf.get(haproxy) ?? ''}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

function get(agent: Agent, socketPath: string, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** SIGTERM to the HAProxy this test started (by its pid), then wait for it to exit. */
async function stopHaproxy(haproxy: ChildProcess, running: Set<ChildProcess>): Promise<void> {
  running.delete(haproxy);
  if (haproxy.exitCode !== null || haproxy.signalCode !== null) return;
  const exited = new Promise((resolve) => haproxy.once('exit', resolve));
  haproxy.kill('SIGTERM');
  await exited;
}
