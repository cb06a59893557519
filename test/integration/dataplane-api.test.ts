/**
 * The Data Plane API driver against the real Data Plane API and real HAProxy. Runs only when
 * DATAPLANEAPI_BIN names a v2.9 binary: our CI cannot install one (the Go module proxy it reaches
 * refuses github.com/haproxytech modules), so CI replays the recording this test writes with
 * DATAPLANE_RECORD=1 (test/unit/dataplane-replay.test.ts). The daemon-level suite runs with the
 * driver too when DATAPLANEAPI_BIN is set (devtools/haproxy-bin.ts).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { DATAPLANEAPI_BIN, HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { freePorts } from '../../devtools/ports.js';
import { DataplaneApiProcess } from '../../src/dataplane/api-process.js';
import type { DataplaneExchange } from '../../src/dataplane/client.js';
import { DataplaneDriver } from '../../src/dataplane/driver.js';
import { ManagedFiles, createRunDir, removeRunDir } from '../../src/driver/files.js';
import { HaproxyProcess } from '../../src/driver/process.js';
import { EXPECTED_OUTCOMES, type Recording, type ScenarioPorts, normalizeExchange, runScenario, scenarioModels } from '../helpers/dataplane-scenario.js';
import { PEM } from '../helpers/fixtures.js';
import { captureLogs } from '../helpers/log-capture.js';

const RECORDING = new URL('../fixtures/dataplaneapi/recording-v2.9.27.json', import.meta.url);

let runDir = '';
let haproxy: HaproxyProcess;
let api: DataplaneApiProcess;
let driver: DataplaneDriver;
let ports: ScenarioPorts;
const exchanges: DataplaneExchange[] = [];
const controller = new AbortController();

function tcpConnects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('Data Plane API driver, real Data Plane API', { skip: DATAPLANEAPI_BIN === undefined ? 'DATAPLANEAPI_BIN is not set' : false }, () => {
  before(async () => {
    runDir = await createRunDir();
    const [publicPort, apiPort, dbPort] = (await freePorts(3)) as [number, number, number];
    ports = { publicPort, apiPort, dbPort };
    const logs = captureLogs('info');
    haproxy = new HaproxyProcess({ haproxyBin: HAPROXY_BIN, runDir, cfgPath: join(runDir, 'haproxy.cfg'), masterSocket: join(runDir, 'master.sock'), logger: logs.logger, killTimeoutMs: 2_000 });
    api = new DataplaneApiProcess({
      bin: DATAPLANEAPI_BIN as string,
      runDir,
      haproxyBin: HAPROXY_BIN,
      logger: logs.logger,
      // The API process's own readiness probes are not the driver's: only the driver's are recorded.
      onExchange: (e) => {
        if (e.request.path !== '/info') exchanges.push(normalizeExchange(e, runDir));
      },
    });
    driver = new DataplaneDriver({ haproxy, api, files: new ManagedFiles(runDir), runDir, logger: logs.logger });
  });

  after(async () => {
    controller.abort();
    await haproxy?.stop();
    await api?.stop();
    if (runDir !== '') await removeRunDir(runDir);
  });

  test('the scenario converges through the API: runtime where it can, a reload where it cannot', async (t) => {
    const steps = await runScenario(driver, runDir, ports, controller.signal);
    for (const step of steps) t.diagnostic(`${step.name}: ${step.outcome}${step.ops ? ` (${step.ops.join(', ')})` : ''} in ${step.ms} ms`);
    assert.deepEqual(
      steps.map((s) => [s.name, s.outcome]),
      EXPECTED_OUTCOMES.map(([n, o]) => [n, o]),
    );
    const live = steps.at(-1)?.live;
    assert.ok(live);
    const last = scenarioModels(runDir, ports).at(-1)?.model;
    for (const backend of last?.backends.filter((b) => b.tls !== undefined) ?? []) {
      for (const server of live.servers.filter((x) => x.backend === backend.name)) {
        assert.equal(server.opState, 'running', `${backend.name}/${server.name} is ${server.opState}${server.maintenance ? ', in maintenance' : ''}`);
      }
      const names: string[] = live.servers.filter((s) => s.backend === backend.name && !s.maintenance).map((s) => `${s.name}@${s.address}:${s.port}`);
      assert.deepEqual(names.sort(), backend.servers.map((s) => `${s.name}@${s.address}:${s.port}`).sort(), backend.name);
    }
    // v2.9.27 leaves `serial` out of a stored certificate's description: HAProxy reports the leaf it serves.
    const rotated = new X509Certificate(PEM.apiCert).serialNumber.toUpperCase();
    assert.notEqual(rotated, new X509Certificate(PEM.webCert).serialNumber.toUpperCase());
    assert.equal(steps.find((s) => s.name === 'leaf rotated')?.live?.leafSerial, rotated, 'the rotated leaf, served right after the runtime change');
    assert.equal(live.leafSerial, rotated);
    if (process.env['DATAPLANE_RECORD'] === '1') {
      const recording: Recording = { api: api.version?.text ?? '', haproxy: HAPROXY_BIN, ports, exchanges };
      writeFileSync(RECORDING, `${JSON.stringify(recording, null, 1)}\n`);
    }
  });

  test('the API killed: HAProxy keeps serving, the API is restarted and takes changes again', async () => {
    const haproxyPid = haproxy.pid;
    const before = api.restarts;
    const pid = api.pid;
    assert.ok(pid !== undefined);
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 20_000;
    while (!(api.restarts > before && api.state === 'running') && Date.now() < deadline) {
      assert.ok(await tcpConnects(ports.publicPort), 'the public listener accepts while the API is down');
      await delay(50);
    }
    assert.equal(api.state, 'running');
    assert.equal(haproxy.pid, haproxyPid, 'HAProxy was not restarted');
    const results = await driver.applyRuntime(
      [
        {
          kind: 'set-address',
          backend:
            scenarioModels(runDir, ports)
              .at(-1)
              ?.model.backends.find((b) => b.tls !== undefined && b.servers.length > 0)?.name ?? '',
          server: 'x',
          address: '10.0.0.9',
          port: 1,
        },
      ],
      controller.signal,
    );
    // An unknown server is refused by the API, with its message: proof the restarted API answers.
    assert.equal(results[0]?.status, 'failed');
    assert.match(results[0]?.error?.message ?? '', /Data Plane API refused to put server \S+\/x into maintenance .*: 500 no data for \S+\/x: not found/);
  });
});
