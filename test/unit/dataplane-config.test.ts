import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checkApiVersion, parseApiVersion, renderApiConfig, renderReloadScript, HAPROXY_MASTER_PID_FILE } from '../../src/dataplane/api-config.js';
import { parseRuntimeServers, runtimeLimits } from '../../src/dataplane/driver.js';
import { HaproxyConnectError, isHaproxyConnectError } from '../../src/errors.js';
import type { RuntimeOp } from '../../src/haproxy/runtime-ops.js';

const RUN_DIR = '/tmp/hc-run-abc';

/** The line `  <key>: <value>` of the rendered YAML, its value JSON-decoded (the renderer quotes with JSON). */
function yamlValue(text: string, key: string): unknown {
  const lines = text.split('\n').filter((line) => line.trimStart().startsWith(`${key}: `) || line.trimStart().startsWith(`- ${key}: `));
  assert.equal(lines.length, 1, `exactly one ${key} line in:\n${text}`);
  const line = lines[0] as string;
  return JSON.parse(line.slice(line.indexOf(`${key}: `) + key.length + 2));
}

describe('renderApiConfig', () => {
  const text = renderApiConfig({ runDir: RUN_DIR, haproxyBin: '/usr/sbin/haproxy', password: 'pw' });

  test('a unix socket in the run directory, and nothing else to listen on', () => {
    assert.equal(yamlValue(text, 'socket_path'), join(RUN_DIR, 'dataplane.sock'));
    assert.match(text, /^ {2}scheme: \[unix\]$/m);
  });

  test('reloads through the script in the run directory', () => {
    assert.equal(yamlValue(text, 'reload_cmd'), `/bin/sh ${RUN_DIR}/dataplane-reload.sh`);
    assert.equal(yamlValue(text, 'haproxy_bin'), '/usr/sbin/haproxy');
    assert.equal(yamlValue(text, 'config_file'), join(RUN_DIR, 'haproxy.cfg'));
  });

  test('maps, certificates and storage all live in the run directory', () => {
    for (const key of ['maps_dir', 'ssl_certs_dir', 'general_storage_dir']) assert.equal(yamlValue(text, key), RUN_DIR, key);
  });

  test('master_runtime is not set (it empties the runtime lists on HAProxy 2.6)', () => {
    assert.doesNotMatch(text, /master_runtime/);
  });

  test('values are JSON-quoted', () => {
    assert.match(text, /^ +socket_path: "\/tmp\/hc-run-abc\/dataplane\.sock"$/m);
    assert.match(text, /^ +password: "pw"$/m);
    assert.match(text, /^ +maps_dir: "\/tmp\/hc-run-abc"$/m);
    assert.match(text, /^ +reload_cmd: "\/bin\/sh \/tmp\/hc-run-abc\/dataplane-reload\.sh"$/m);
  });

  test('a hostile password stays one YAML scalar on one line', () => {
    const password = "a\"b\\c\nuser: root\n: # not a comment\r\t'x' {[&*!|>%@`";
    const hostile = renderApiConfig({ runDir: RUN_DIR, haproxyBin: '/usr/sbin/haproxy', password });
    assert.equal(hostile.split('\n').length, text.split('\n').length, 'the password adds no line');
    assert.equal(yamlValue(hostile, 'password'), password);
    assert.doesNotMatch(hostile, /^user: root$/m);
  });

  test('any password round-trips through its line', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 64 }), (password) => {
        const rendered = renderApiConfig({ runDir: RUN_DIR, haproxyBin: '/usr/sbin/haproxy', password });
        assert.equal(rendered.split('\n').length, text.split('\n').length);
        assert.equal(yamlValue(rendered, 'password'), password);
      }),
      { numRuns: 200 },
    );
  });

  for (const [what, input, value] of [
    ['run directory', { runDir: '/tmp/my run', haproxyBin: '/usr/sbin/haproxy', password: 'pw' }, '/tmp/my run'],
    ['run directory (tab)', { runDir: '/tmp/my\trun', haproxyBin: '/usr/sbin/haproxy', password: 'pw' }, '/tmp/my\trun'],
    ['haproxy binary', { runDir: RUN_DIR, haproxyBin: '/opt/my haproxy/haproxy', password: 'pw' }, '/opt/my haproxy/haproxy'],
  ] as const) {
    test(`a ${what} with white space is refused, naming it`, () => {
      assert.throws(
        () => renderApiConfig(input),
        (err: unknown) => {
          assert.ok(isHaproxyConnectError(err, 'CONFIG_INVALID'), `expected CONFIG_INVALID, got ${String(err)}`);
          assert.ok(err.message.includes(JSON.stringify(value)), err.message);
          return true;
        },
      );
    });
  }
});

describe('renderReloadScript', () => {
  test('signals the master whose pid file is in the run directory', () => {
    const script = renderReloadScript(RUN_DIR);
    assert.match(script, /^#!\/bin\/sh\n/);
    assert.match(script, /kill -USR2/);
    assert.ok(script.includes(join(RUN_DIR, HAPROXY_MASTER_PID_FILE)), script);
  });

  test('run: SIGUSR2 to the pid in the file; without the file, nothing and exit 0 (a failed reload makes the API revert haproxy.cfg)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hc-reload-script-'));
    const script = join(dir, 'reload.sh');
    await writeFile(script, renderReloadScript(dir));
    const child = spawn('sleep', ['30']);
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
      assert.equal(spawnSync('/bin/sh', [script]).status, 0, 'no pid file: success, no signal');
      await writeFile(join(dir, HAPROXY_MASTER_PID_FILE), `${child.pid}\n`);
      assert.equal(spawnSync('/bin/sh', [script]).status, 0);
      assert.equal(await exited, 'SIGUSR2');
    } finally {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('Data Plane API version', () => {
  const check = (text: string): void => checkApiVersion(parseApiVersion(text, '/usr/bin/dataplaneapi'), '/usr/bin/dataplaneapi');
  const unsupported = (text: string) => (err: unknown) => {
    assert.ok(isHaproxyConnectError(err, 'DATAPLANE_UNSUPPORTED'), `expected DATAPLANE_UNSUPPORTED, got ${String(err)}`);
    assert.ok(err.message.includes(text), `message names ${JSON.stringify(text)}: ${err.message}`);
    return true;
  };

  test('the 2.9 line is accepted, with or without the leading v and commit', () => {
    assert.deepEqual(parseApiVersion('v2.9.27 9818b7d1', 'dataplaneapi'), { major: 2, minor: 9, patch: 27, text: 'v2.9.27 9818b7d1' });
    assert.deepEqual(parseApiVersion('2.9.3', 'dataplaneapi'), { major: 2, minor: 9, patch: 3, text: '2.9.3' });
    check('v2.9.27 9818b7d1');
    check('2.9.3');
  });

  test('3.x is refused, not taken for newer-and-fine (nor older)', () => {
    assert.throws(() => check('v3.0.1 abc'), unsupported('v3.0.1 abc'));
  });

  test('an older line is refused', () => {
    assert.throws(() => check('v2.8.4'), unsupported('v2.8.4'));
  });

  test('garbage is refused, naming the text', () => {
    for (const text of ['dataplaneapi', '', 'v2.9', 'version unknown']) {
      assert.throws(() => parseApiVersion(text, '/usr/bin/dataplaneapi'), unsupported(JSON.stringify(text)));
    }
  });
});

describe('runtimeLimits', () => {
  const server = { name: 's1', address: '10.0.0.1', port: 21000, weight: 1 };
  const layout = new Map([['b', new Map([['slot-0', undefined]])]]);
  const ops: RuntimeOp[] = [
    { kind: 'add-server', backend: 'b', server, spec: 's1 10.0.0.1:21000 weight 1' },
    { kind: 'set-weight', backend: 'b', server: 's1', weight: 3 },
    // Stored through the API, loaded through HAProxy's runtime API: no reload.
    { kind: 'set-leaf', path: `${RUN_DIR}/leaf.pem`, pem: '-----BEGIN CERTIFICATE-----' },
    { kind: 'set-address', backend: 'b', server: 's1', address: '10.0.0.2', port: 21001 },
    { kind: 'remove-server', backend: 'b', server: 's1' },
    { kind: 'set-intentions-epoch', path: `${RUN_DIR}/intentions.map`, epoch: 'e2', previous: ['e1'] },
    { kind: 'set-split-weights', path: `${RUN_DIR}/splits.map`, entries: [['f/0/0', 50]] },
  ];
  for (const op of ops) {
    test(`${op.kind} applies at runtime (a free slot for the add)`, () => {
      assert.deepEqual(runtimeLimits([op], layout), []);
    });
  }
});

describe('parseRuntimeServers', () => {
  // The shape of GET /v2/services/haproxy/runtime/servers on v2.9.27.
  const ANSWER =
    '[{"address":"127.0.0.1","admin_state":"ready","id":"1","name":"s0","operational_state":"up","port":18081},{"address":"10.0.0.2","admin_state":"maint","id":"3","name":"s2","operational_state":"down","port":18084}]';

  test('a realistic answer', () => {
    assert.deepEqual(parseRuntimeServers(ANSWER, 'up_db'), [
      { backend: 'up_db', name: 's0', address: '127.0.0.1', port: 18081, maintenance: false, adminState: 0, opState: 'running' },
      { backend: 'up_db', name: 's2', address: '10.0.0.2', port: 18084, maintenance: true, adminState: 1, opState: 'stopped' },
    ]);
  });

  test('an empty backend', () => {
    assert.deepEqual(parseRuntimeServers('[]', 'up_db'), []);
  });

  for (const [what, body] of [
    ['not JSON', '<html>502 Bad Gateway</html>'],
    ['not an array', '{"code":404,"message":"not found"}'],
    ['null', 'null'],
    ['an item that is not an object', '[1]'],
    ['an item without a name', '[{"address":"10.0.0.1","port":1}]'],
    ['an item without an address', '[{"name":"s0","port":1}]'],
  ] as const) {
    test(`${what} is DATAPLANE_API naming the backend`, () => {
      assert.throws(
        () => parseRuntimeServers(body, 'up_db'),
        (err: unknown) => {
          assert.ok(isHaproxyConnectError(err, 'DATAPLANE_API'), `expected DATAPLANE_API, got ${String(err)}`);
          assert.match(err.message, /up_db/);
          return true;
        },
      );
    });
  }

  test('any body parses or throws a HaproxyConnectError, never another error', () => {
    const serverLike = fc.record(
      {
        name: fc.oneof(fc.string(), fc.integer()),
        address: fc.oneof(fc.string(), fc.constant(null)),
        port: fc.oneof(fc.integer(), fc.string()),
        admin_state: fc.constantFrom('ready', 'maint', 'drain', 7),
        operational_state: fc.constantFrom('up', 'down', 'stopping', null),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.json(),
      fc.array(fc.oneof(serverLike, fc.jsonValue())).map((items) => JSON.stringify(items)),
    );
    fc.assert(
      fc.property(body, (text) => {
        try {
          const servers = parseRuntimeServers(text, 'b');
          for (const s of servers) {
            assert.equal(typeof s.name, 'string');
            assert.equal(typeof s.address, 'string');
            assert.ok(['running', 'stopping', 'stopped'].includes(s.opState));
          }
        } catch (err) {
          if (!(err instanceof HaproxyConnectError)) throw new Error(`not a HaproxyConnectError for ${JSON.stringify(text)}: ${String(err)}`);
          assert.equal(err.code, 'DATAPLANE_API');
        }
      }),
      { numRuns: 300 },
    );
  });
});
