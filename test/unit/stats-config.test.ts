/**
 * -stats-addr and -stats-service-register: address parsing (IPv4, IPv6 in brackets, `:port`),
 * clear CONFIG_INVALID messages naming the value, the registration built from them, and what
 * /ready and /health answer for each sidecar state.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig, type Config } from '../../src/config/config.js';
import { formatListenAddress, parseListenAddress } from '../../src/config/listen-address.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { liveness, readiness, type SidecarView } from '../../src/telemetry/readiness.js';
import { StatsServiceRegistration, statsServiceDefinition } from '../../src/telemetry/stats-service.js';
import { captureLogs } from '../helpers/log-capture.js';

async function config(argv: string[]): Promise<Config> {
  const request = await loadConfig({ argv: ['-sidecar-for', 'web', ...argv], env: {} });
  assert.equal(request.kind, 'run');
  return (request as { config: Config }).config;
}

describe('parseListenAddress', () => {
  const good: Array<[string, string | undefined, number]> = [
    ['127.0.0.1:9102', '127.0.0.1', 9102],
    ['0.0.0.0:1', '0.0.0.0', 1],
    ['[::1]:9102', '::1', 9102],
    ['[::]:65535', '::', 65535],
    ['[2001:db8::7]:80', '2001:db8::7', 80],
    [':9102', undefined, 9102],
    [' 10.1.2.3:8080 ', '10.1.2.3', 8080],
  ];
  for (const [raw, host, port] of good) {
    test(`accepts '${raw}'`, () => assert.deepEqual(parseListenAddress(raw), { host, port }));
  }
  const bad = [
    '',
    '9102',
    '127.0.0.1',
    '127.0.0.1:',
    '127.0.0.1:0',
    '127.0.0.1:65536',
    '::1:9102',
    '[127.0.0.1]:9102',
    '[::1]',
    'localhost:9102',
    '300.1.1.1:80',
    '127.0.0.1:80x',
    '[::1]:9102/metrics',
    'http://127.0.0.1:9102',
  ];
  for (const raw of bad) test(`rejects '${raw}'`, () => assert.equal(parseListenAddress(raw), undefined));

  test('formats IPv6 with brackets', () => {
    assert.equal(formatListenAddress({ host: '::1', port: 1 }), '[::1]:1');
    assert.equal(formatListenAddress({ host: '127.0.0.1', port: 2 }), '127.0.0.1:2');
    assert.equal(formatListenAddress({ host: undefined, port: 3 }), ':3');
  });
});

describe('-stats-addr and -stats-service-register', () => {
  test('absent: no stats server', async () => {
    assert.equal((await config([])).stats, undefined);
  });

  test('an address, with and without registration', async () => {
    assert.deepEqual((await config(['-stats-addr', '127.0.0.1:9102'])).stats, { listen: { host: '127.0.0.1', port: 9102 }, registerService: false });
    assert.deepEqual((await config(['-stats-addr=[::1]:9102', '-stats-service-register'])).stats, { listen: { host: '::1', port: 9102 }, registerService: true });
    // A boolean flag takes no value: the next argument is the next flag.
    assert.deepEqual((await config(['-stats-service-register', '-stats-addr', ':9102'])).stats, { listen: { host: undefined, port: 9102 }, registerService: true });
  });

  const invalid: Array<[string, string[], RegExp]> = [
    ['a bad address names the value and the flag', ['-stats-addr', 'localhost:99999'], /invalid value 'localhost:99999' for -stats-addr: expected <ip>:<port>/],
    ['a port alone', ['-stats-addr', '9102'], /'9102' for -stats-addr/],
    ['registration without an address', ['-stats-service-register'], /-stats-service-register needs -stats-addr/],
    ['a value for the boolean flag', ['-stats-service-register=maybe', '-stats-addr', ':1'], /stats-service-register/],
  ];
  for (const [name, argv, pattern] of invalid) {
    test(name, async () => {
      await assert.rejects(loadConfig({ argv: ['-sidecar-for', 'web', ...argv], env: {} }), (err: unknown) => {
        assert.ok(isHaproxyConnectError(err, 'CONFIG_INVALID'), String(err));
        assert.match(err.message, pattern);
        return true;
      });
    });
  }
});

describe('the stats service registration', () => {
  const target = { proxyId: 'web-sidecar-proxy', serviceName: 'web', version: '1.2.3' };

  test('an IPv4 address: service address, port and check URL from -stats-addr', () => {
    const def = statsServiceDefinition({ ...target, listen: { host: '10.0.0.5', port: 9102 } });
    assert.equal(def.id, 'web-sidecar-proxy-stats');
    assert.equal(def.name, 'web-connect-stats');
    assert.equal(def.address, '10.0.0.5');
    assert.equal(def.port, 9102);
    assert.equal(def.check.http, 'http://10.0.0.5:9102/health');
    assert.equal(def.check.interval, '10s');
    assert.equal(def.check.deregisterCriticalServiceAfter, '10m');
    assert.equal(def.meta.metrics_path, '/metrics');
  });

  test('IPv6 in brackets in the URL; wildcards publish the node address and check through loopback', () => {
    assert.equal(statsServiceDefinition({ ...target, listen: { host: '::1', port: 1 } }).check.http, 'http://[::1]:1/health');
    const any4 = statsServiceDefinition({ ...target, listen: { host: '0.0.0.0', port: 2 } });
    assert.equal(any4.address, '');
    assert.equal(any4.check.http, 'http://127.0.0.1:2/health');
    assert.equal(statsServiceDefinition({ ...target, listen: { host: '::', port: 3 } }).check.http, 'http://[::1]:3/health');
    assert.equal(statsServiceDefinition({ ...target, listen: { host: undefined, port: 4 } }).check.http, 'http://127.0.0.1:4/health');
  });

  test('registers on the agent and deregisters once; a failed deregistration is logged, not thrown', async () => {
    const consul = new FakeConsulAgentApi();
    const logs = captureLogs();
    const registration = new StatsServiceRegistration(consul, { ...target, listen: { host: '127.0.0.1', port: 9102 } }, logs.logger);
    await registration.register(new AbortController().signal);
    assert.equal(consul.services.get('web-sidecar-proxy-stats')?.name, 'web-connect-stats');
    await registration.deregister();
    await registration.deregister();
    assert.equal(consul.services.size, 0);
    assert.equal(consul.callsOf('deregisterService'), 1);

    await registration.register(new AbortController().signal);
    consul.failNext(1, new Error('agent gone'), 'deregisterService');
    await registration.deregister();
    assert.ok(
      logs.find((l) => l.msg === 'cannot deregister the stats service; Consul removes it once its check has been critical long enough' && l.err === 'agent gone' && l.removedAfterCritical === '10m'),
    );
  });
});

describe('/ready and /health verdicts', () => {
  const NOW = Date.parse('2030-01-01T00:00:00Z');
  const serving: SidecarView = {
    shuttingDown: false,
    firstApplied: true,
    missing: [],
    haproxyState: 'running',
    leafValidBefore: '2030-01-02T00:00:00Z',
    caRoots: 1,
  };
  const cases: Array<[string, Partial<SidecarView>, boolean, RegExp]> = [
    ['serving', {}, true, /^ready$/],
    ['reloading still serves', { haproxyState: 'reloading' }, true, /^ready$/],
    ['before the first configuration', { firstApplied: false, haproxyState: 'stopped' }, false, /^no configuration applied yet$/],
    ['waiting for Consul', { firstApplied: false, haproxyState: 'stopped', missing: ['leaf', 'roots'] }, false, /waiting for leaf, roots from Consul/],
    ['the proxy fronts another service, its new leaf not there yet', { missing: ['leaf', 'intentions'] }, false, /^waiting for leaf, intentions from Consul \(the proxy fronts another service now\)$/],
    ['haproxy crashed', { haproxyState: 'crashed' }, false, /^haproxy is crashed$/],
    ['haproxy starting again', { haproxyState: 'starting' }, false, /^haproxy is starting$/],
    ['leaf expired', { leafValidBefore: '2029-12-31T23:59:59Z' }, false, /leaf certificate expired at 2029-12-31T23:59:59Z/],
    ['leaf unreadable', { leafValidBefore: 'soon' }, false, /leaf certificate expired at soon/],
    ['no roots', { caRoots: 0 }, false, /^no CA roots$/],
    ['shutting down wins over everything', { shuttingDown: true }, false, /^shutting down$/],
  ];
  for (const [name, change, ok, reason] of cases) {
    test(`ready: ${name}`, () => {
      const verdict = readiness({ ...serving, ...change }, NOW);
      assert.equal(verdict.ok, ok);
      assert.match(verdict.reason, reason);
      assert.ok(!verdict.reason.includes('\n'));
    });
  }

  test('health: alive while HAProxy serves and answers on its stats socket', () => {
    assert.deepEqual(liveness({ haproxyState: 'running' }, undefined), { ok: true, reason: 'alive' });
    assert.deepEqual(liveness({ haproxyState: 'reloading' }, undefined), { ok: true, reason: 'alive' });
    assert.deepEqual(liveness({ haproxyState: 'starting' }, undefined), { ok: false, reason: 'haproxy is starting' });
    assert.deepEqual(liveness({ haproxyState: 'stopping' }, undefined), { ok: false, reason: 'haproxy is stopping' });
    const dead = liveness({ haproxyState: 'running' }, 'ECONNREFUSED');
    assert.equal(dead.ok, false);
    assert.match(dead.reason, /does not answer on its stats socket: ECONNREFUSED/);
  });
});
