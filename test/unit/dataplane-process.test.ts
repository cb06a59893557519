/**
 * The Data Plane API's supervisor (src/dataplane/api-process.ts) with a stand-in API: a small
 * Node script that reads the generated configuration, listens on its socket and reports a version.
 * The real API's behaviour is covered by the recording (dataplane-replay.test.ts) and, with
 * DATAPLANEAPI_BIN, by test/integration/dataplane-api.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { DATAPLANE_CONFIG_FILE } from '../../src/dataplane/api-config.js';
import { DataplaneApiProcess } from '../../src/dataplane/api-process.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { captureLogs } from '../helpers/log-capture.js';

const dirs: string[] = [];
const running: DataplaneApiProcess[] = [];

after(async () => {
  for (const api of running) await api.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** A stand-in API answering /v2/info with `version`; it also logs the password it was given, which must not reach our logs. */
async function fakeApi(version: string): Promise<{ bin: string; runDir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'hc-dp-proc-'));
  dirs.push(dir);
  const runDir = join(dir, 'run');
  const bin = join(dir, 'fake-dataplaneapi');
  const script = `#!${process.execPath}
const fs = require('node:fs');
const http = require('node:http');
const cfg = fs.readFileSync(process.argv[3], 'utf8');
const socket = JSON.parse(/socket_path: (.*)/.exec(cfg)[1]);
const password = JSON.parse(/password: (.*)/.exec(cfg)[1]);
console.log('configured with password ' + password);
http.createServer((req, res) => res.end(JSON.stringify({ api: { version: ${JSON.stringify(version)} } }))).listen(socket);
`;
  await writeFile(bin, script);
  await chmod(bin, 0o755);
  const { mkdir } = await import('node:fs/promises');
  await mkdir(runDir, { mode: 0o700 });
  return { bin, runDir };
}

describe('the Data Plane API process', () => {
  test('starts a v2.9 API, writes its configuration 0600, and keeps the password out of the logs', async () => {
    const { bin, runDir } = await fakeApi('v2.9.27 abcdef');
    const logs = captureLogs('debug');
    const api = new DataplaneApiProcess({ bin, runDir, haproxyBin: 'haproxy', logger: logs.logger });
    running.push(api);
    await api.start();
    assert.equal(api.state, 'running');
    assert.equal(api.version?.text, 'v2.9.27 abcdef');
    assert.equal(statSync(join(runDir, DATAPLANE_CONFIG_FILE)).mode & 0o777, 0o600);
    const password = JSON.parse(/password: (.*)/.exec(readFileSync(join(runDir, DATAPLANE_CONFIG_FILE), 'utf8'))?.[1] ?? '""') as string;
    assert.ok(password.length >= 24);
    const deadline = Date.now() + 5_000;
    while (!logs.lines.some((l) => String(l['line']).startsWith('configured with password')) && Date.now() < deadline) await delay(20);
    const echoed = logs.lines.find((l) => String(l['line']).startsWith('configured with password'));
    assert.equal(echoed?.['line'], 'configured with password ***');
    assert.ok(!JSON.stringify(logs.lines).includes(password), 'the password reached a log line');
  });

  test('restarts the API when it dies, without being asked', async () => {
    const { bin, runDir } = await fakeApi('v2.9.3');
    const api = new DataplaneApiProcess({ bin, runDir, haproxyBin: 'haproxy', logger: captureLogs().logger });
    running.push(api);
    await api.start();
    const pid = api.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    while (!(api.restarts === 1 && api.state === 'running') && Date.now() < deadline) await delay(20);
    assert.equal(api.state, 'running');
    assert.notEqual(api.pid, pid);
    await api.ready();
  });

  test('refuses a version it cannot drive, naming it, and leaves nothing running', async () => {
    const { bin, runDir } = await fakeApi('v3.0.1 1234567');
    const api = new DataplaneApiProcess({ bin, runDir, haproxyBin: 'haproxy', logger: captureLogs().logger });
    await assert.rejects(api.start(), (err) => isHaproxyConnectError(err, 'DATAPLANE_UNSUPPORTED') && /v3\.0\.1 1234567/.test(err.message) && err.message.includes(bin));
    assert.equal(api.state, 'stopped');
    assert.equal(api.pid, undefined);
  });

  test('a binary that does not exist is a start error naming it', async () => {
    const { runDir } = await fakeApi('v2.9.27');
    const api = new DataplaneApiProcess({ bin: '/nonexistent/dataplaneapi', runDir, haproxyBin: 'haproxy', logger: captureLogs().logger });
    await assert.rejects(api.start(), (err) => isHaproxyConnectError(err, 'DATAPLANE_API') && err.message.includes('/nonexistent/dataplaneapi'));
  });
});
