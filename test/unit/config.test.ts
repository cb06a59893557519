import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_DATAPLANE_BIN, FLAGS, loadConfig, normalizeConsulAddress, type Config } from '../../src/config/config.js';
import { formatHelp, parseFlags } from '../../src/config/flags.js';
import { isHaproxyConnectError } from '../../src/errors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hc-config-'));
  await writeFile(join(dir, 'token'), '  file-token\n');
  await writeFile(join(dir, 'empty-token'), '\n');
});
after(async () => rm(dir, { recursive: true, force: true }));

async function config(argv: string[], env: Record<string, string> = {}): Promise<Config> {
  const request = await loadConfig({ argv, env });
  assert.equal(request.kind, 'run');
  return (request as { config: Config }).config;
}

async function rejects(argv: string[], env: Record<string, string>, pattern: RegExp): Promise<void> {
  await assert.rejects(loadConfig({ argv, env }), (err: unknown) => {
    assert.ok(isHaproxyConnectError(err, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('Go-style flags', () => {
  const specs = [
    { name: 'sidecar-for', kind: 'string', usage: '' },
    { name: 'enable-intentions', kind: 'boolean', usage: '' },
    { name: 'dataplane', kind: 'optional-string', usage: '' },
  ] as const;
  const cases: Array<[string, string[], Record<string, string | boolean>]> = [
    ['single dash with space', ['-sidecar-for', 'web'], { 'sidecar-for': 'web' }],
    ['double dash with space', ['--sidecar-for', 'web'], { 'sidecar-for': 'web' }],
    ['single dash with =', ['-sidecar-for=web'], { 'sidecar-for': 'web' }],
    ['double dash with =', ['--sidecar-for=web'], { 'sidecar-for': 'web' }],
    ['value with =', ['-sidecar-for=a=b'], { 'sidecar-for': 'a=b' }],
    ['boolean bare', ['-enable-intentions'], { 'enable-intentions': true }],
    ['boolean =false', ['-enable-intentions=false'], { 'enable-intentions': false }],
    ['boolean =1', ['--enable-intentions=1'], { 'enable-intentions': true }],
    ['stops at --', ['-enable-intentions', '--', '-sidecar-for'], { 'enable-intentions': true }],
    ['optional string with a value', ['-dataplane', '/opt/dpapi'], { dataplane: '/opt/dpapi' }],
    ['optional string bare at the end', ['-sidecar-for', 'web', '-dataplane'], { 'sidecar-for': 'web', dataplane: '' }],
    ['optional string bare before a flag', ['-dataplane', '-sidecar-for', 'web'], { dataplane: '', 'sidecar-for': 'web' }],
    ['optional string with =', ['-dataplane=/x'], { dataplane: '/x' }],
  ];
  for (const [name, argv, want] of cases) {
    test(name, () => {
      assert.deepEqual(Object.fromEntries(parseFlags(argv, specs).values), want);
    });
  }
  test('unknown flag names the flag', () => {
    assert.throws(() => parseFlags(['-nope'], specs), /flag provided but not defined: -nope/);
  });
  test('missing value names the flag', () => {
    assert.throws(() => parseFlags(['-sidecar-for'], specs), /flag needs an argument: -sidecar-for/);
  });
  test('bad boolean names the value', () => {
    assert.throws(() => parseFlags(['-enable-intentions=maybe'], specs), /'maybe' for flag -enable-intentions/);
  });
});

describe('config from flags and environment', () => {
  test('defaults follow Consul', async () => {
    const c = await config(['-sidecar-for', 'web']);
    assert.equal(c.sidecarFor, 'web');
    assert.equal(c.consul.address, 'http://127.0.0.1:8500');
    assert.equal(c.consul.token, undefined);
    assert.equal(c.consul.tls, undefined);
    assert.equal(c.haproxyBin, 'haproxy');
    assert.equal(c.cfgBasePath, tmpdir());
    assert.equal(c.logLevel, 'info');
    assert.equal(c.enforceIntentions, true, 'intentions are enforced by default');
  });
  test('-enable-intentions=false opts out of enforcement', async () => {
    assert.equal((await config(['-sidecar-for', 'web', '-enable-intentions=false'])).enforceIntentions, false);
    assert.equal((await config(['-sidecar-for', 'web', '-enable-intentions=true'])).enforceIntentions, true);
  });
  test('-shutdown-grace takes a Go duration (default 10s)', async () => {
    assert.equal((await config(['-sidecar-for', 'web'])).shutdownGraceMs, 10_000);
    for (const [raw, ms] of [
      ['30s', 30_000],
      ['1m30s', 90_000],
      ['250ms', 250],
      ['0', 0],
      ['1.5s', 1_500],
      ['1h', 3_600_000],
    ] as const) {
      assert.equal((await config(['-sidecar-for', 'web', '-shutdown-grace', raw])).shutdownGraceMs, ms, raw);
    }
    for (const raw of ['10', '-5s', 'soon', '2h', '5 s']) {
      await assert.rejects(config(['-sidecar-for', 'web', '-shutdown-grace', raw]), (err: Error) => err.message.includes(`'${raw}' for -shutdown-grace`), raw);
    }
  });
  test('-help and -version', async () => {
    assert.deepEqual(await loadConfig({ argv: ['-help'], env: {} }), { kind: 'help' });
    assert.deepEqual(await loadConfig({ argv: ['--version'], env: {} }), { kind: 'version' });
  });
  test("the original tool's flags are accepted", async () => {
    const c = await config([
      '-sidecar-for',
      'web',
      '-enable-intentions',
      '-haproxy',
      '/usr/sbin/haproxy',
      '-haproxy-cfg-base-path',
      dir,
      '-http-addr',
      '10.0.0.1:8501',
      '-token',
      't',
      '-log-level',
      'debug',
    ]);
    assert.equal(c.haproxyBin, '/usr/sbin/haproxy');
    assert.equal(c.cfgBasePath, dir);
    assert.equal(c.consul.address, 'http://10.0.0.1:8501');
    assert.equal(c.consul.token, 't');
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.enforceIntentions, true);
  });
  test('flags win over the environment', async () => {
    const c = await config(['-sidecar-for', 'web', '-http-addr', 'https://consul:8501', '-token', 'flag'], { CONSUL_HTTP_ADDR: 'other:1', CONSUL_HTTP_TOKEN: 'env' });
    assert.equal(c.consul.address, 'https://consul:8501');
    assert.equal(c.consul.token, 'flag');
    assert.deepEqual(c.consul.tls, { verify: true });
  });
  test('environment conventions', async () => {
    const c = await config(['-sidecar-for', 'web'], {
      CONSUL_HTTP_ADDR: 'consul.example:8501',
      CONSUL_HTTP_SSL: 'true',
      CONSUL_HTTP_TOKEN_FILE: join(dir, 'token'),
      CONSUL_HTTP_TOKEN: 'ignored',
      CONSUL_CACERT: '/ca.pem',
      CONSUL_CLIENT_CERT: '/c.pem',
      CONSUL_CLIENT_KEY: '/k.pem',
      CONSUL_HTTP_SSL_VERIFY: 'false',
    });
    assert.equal(c.consul.address, 'https://consul.example:8501');
    assert.equal(c.consul.token, 'file-token');
    assert.deepEqual(c.consul.tls, { verify: false, caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' });
  });
  test('-token-file wins over -token', async () => {
    const c = await config(['-sidecar-for', 'web', '-token', 'inline', '-token-file', join(dir, 'token')]);
    assert.equal(c.consul.token, 'file-token');
  });
  test('unix socket address', async () => {
    const c = await config(['-sidecar-for', 'web'], { CONSUL_HTTP_ADDR: 'unix:///run/consul/http.sock' });
    assert.equal(c.consul.address, 'unix:///run/consul/http.sock');
  });
  test('-dataplane takes an optional binary (bare: dataplaneapi from PATH)', async () => {
    assert.equal(DEFAULT_DATAPLANE_BIN, 'dataplaneapi');
    assert.equal((await config(['-sidecar-for', 'web', '-dataplane', '/opt/dpapi'])).dataplaneBin, '/opt/dpapi');
    assert.equal((await config(['-sidecar-for', 'web', '-dataplane'])).dataplaneBin, 'dataplaneapi');
    assert.equal((await config(['-dataplane', '-sidecar-for', 'web'])).dataplaneBin, 'dataplaneapi');
    assert.equal((await config(['-sidecar-for', 'web', '-dataplane=/x'])).dataplaneBin, '/x');
    assert.equal((await config(['-sidecar-for', 'web', '--dataplane=/x'])).dataplaneBin, '/x');
    assert.equal((await config(['-sidecar-for', 'web', '-dataplane='])).dataplaneBin, 'dataplaneapi');
  });
  test('without -dataplane, the native driver (no dataplaneBin)', async () => {
    const c = await config(['-sidecar-for', 'web']);
    assert.equal(c.dataplaneBin, undefined);
    assert.ok(!('dataplaneBin' in c));
  });
  test('-help lists -dataplane with its optional binary', () => {
    const help = formatHelp('haproxy-connect', FLAGS);
    assert.match(help, /^ {2}-dataplane \[<dataplaneapi binary>\]$/m);
    assert.doesNotMatch(help, /not supported/);
  });
  test('-sidecar-for-tag alone is enough', async () => {
    const c = await config(['-sidecar-for-tag', 'blue']);
    assert.equal(c.sidecarFor, undefined);
    assert.equal(c.sidecarForTag, 'blue');
  });

  // argv is built lazily: the temp dir exists only once the before hook ran.
  const bad: Array<[string, () => string[], Record<string, string>, RegExp]> = [
    ['no service', () => [], {}, /missing -sidecar-for/],
    ['empty service', () => ['-sidecar-for', ''], {}, /-sidecar-for must not be empty/],
    ['bad log level', () => ['-sidecar-for', 'web', '-log-level', 'verbose'], {}, /'verbose' for -log-level/],
    ['bad address scheme', () => ['-sidecar-for', 'web', '-http-addr', 'ftp://x:1'], {}, /'ftp:\/\/x:1' from -http-addr: scheme 'ftp'/],
    ['bad env address', () => ['-sidecar-for', 'web'], { CONSUL_HTTP_ADDR: 'http://x:1/path' }, /'http:\/\/x:1\/path' from CONSUL_HTTP_ADDR/],
    ['missing token file', () => ['-sidecar-for', 'web', '-token-file', '/nonexistent/token'], {}, /'\/nonexistent\/token' given by -token-file: ENOENT/],
    ['empty token file', () => ['-sidecar-for', 'web', '-token-file', join(dir, 'empty-token')], {}, /token file '.*empty-token' given by -token-file is empty/],
    ['bad ssl verify', () => ['-sidecar-for', 'web'], { CONSUL_HTTP_SSL_VERIFY: 'nah' }, /'nah' for CONSUL_HTTP_SSL_VERIFY/],
    ['cert without key', () => ['-sidecar-for', 'web'], { CONSUL_CLIENT_CERT: '/c.pem' }, /must be set together/],
    ['missing base path', () => ['-sidecar-for', 'web', '-haproxy-cfg-base-path', '/nonexistent/dir'], {}, /-haproxy-cfg-base-path '\/nonexistent\/dir' does not exist/],
    ['positional', () => ['-sidecar-for', 'web', 'extra'], {}, /unexpected argument 'extra'/],
  ];
  for (const [name, argv, env, pattern] of bad) test(name, async () => rejects(argv(), env, pattern));
});

describe('normalizeConsulAddress', () => {
  const cases: Array<[string, boolean, string]> = [
    ['127.0.0.1:8500', false, 'http://127.0.0.1:8500'],
    ['127.0.0.1:8501', true, 'https://127.0.0.1:8501'],
    ['http://localhost:8500/', false, 'http://localhost:8500'],
    ['[::1]:8500', false, 'http://[::1]:8500'],
    ['unix:///tmp/c.sock', false, 'unix:///tmp/c.sock'],
  ];
  for (const [raw, tls, want] of cases) test(raw, () => assert.equal(normalizeConsulAddress(raw, 'test', tls), want));
});
