/**
 * The daemon's wiring (main.run) against an in-process fake Consul agent and a real HAProxy:
 * edge cases that a real agent cannot produce on demand.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, waitFor } from '../../devtools/ports.js';
import { tlsHttpProbe } from '../../devtools/probes.js';
import type { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { HaproxyConnectError } from '../../src/errors.js';
import { RuntimeSession } from '../../src/driver/runtime-session.js';
import { parseServersState } from '../../src/haproxy/runtime-state.js';
import { run } from '../../src/main.js';
import { captureLogs, type CapturedLogs } from '../helpers/log-capture.js';
import { ACTIVE_ROOT_ID, PEM, PREVIOUS_ROOT_ID, endpoint, roots, webLeaf } from '../helpers/fixtures.js';
import { API, fakeWebAgent, webSidecarConfig } from '../helpers/fake-web-agent.js';

let base: string;
before(async () => {
  base = await mkdtemp(join(tmpdir(), 'hc-run-'));
});
after(async () => rm(base, { recursive: true, force: true }));

interface Running {
  consul: FakeConsulAgentApi;
  logs: CapturedLogs;
  shutdown: AbortController;
  done: Promise<void>;
  runDir(): string;
  messages(msg: string): Array<Record<string, unknown>>;
}

async function startSidecar(enforceIntentions = false, driftCheckIntervalMs?: number): Promise<Running> {
  const consul = await fakeWebAgent([endpoint('node-1', '127.0.0.1', 1)]);
  const config = webSidecarConfig(consul, base, { enforceIntentions });
  const logs = captureLogs('debug');
  const shutdown = new AbortController();
  const done = run(config, shutdown.signal, { logger: logs.logger, consul, ...(driftCheckIntervalMs !== undefined && { driftCheckIntervalMs }) });
  const messages = (msg: string): Array<Record<string, unknown>> => logs.lines.filter((l) => l.msg === msg);
  await waitFor('sidecar ready', async () => messages('sidecar ready')[0], 20_000);
  return { consul, logs, shutdown, done, messages, runDir: () => messages('created run directory')[0]?.runDir as string };
}

async function stop(sidecar: Running): Promise<void> {
  sidecar.shutdown.abort(new Error('test done'));
  await sidecar.done;
}

describe('sidecar wiring with a fake Consul and real HAProxy', () => {
  // The first change of a burst returns the blocking query and is applied at once; the other 99,
  // arriving while it is applied, are folded into one more batch.
  test('a burst of 100 endpoint changes is applied in at most two runtime batches, without a reload', async () => {
    const sidecar = await startSidecar();
    try {
      const endpoints = [endpoint('node-1', '127.0.0.1', 1)];
      for (let i = 2; i <= 101; i++) {
        endpoints.push(endpoint(`node-${i}`, '127.0.0.1', i));
        sidecar.consul.setEndpoints(API, [...endpoints]);
      }
      const batches = (): Array<Record<string, unknown>> => sidecar.messages('applied runtime changes');
      await waitFor('100 servers added at runtime', async () => (batches().reduce((n, b) => n + (b.ops as number), 0) >= 100 ? true : undefined), 20_000);
      assert.ok(batches().length <= 2, JSON.stringify(batches()));
      assert.ok(
        batches().every((b) => Object.keys(b.kinds as object).join() === 'add-server'),
        JSON.stringify(batches()),
      );
      const firstBurstBatches = batches().length;
      assert.equal(sidecar.messages('reloading haproxy').length, 0);
      const servers = async (): Promise<number> => (await readFile(join(sidecar.runDir(), 'haproxy.cfg'), 'utf8')).match(/^ {4}server node-/gm)?.length ?? 0;
      await waitFor('haproxy.cfg in step with the runtime state', async () => ((await servers()) === 101 ? true : undefined), 10_000);

      sidecar.consul.setEndpoints(API, [endpoint('node-7', '127.0.0.1', 7, 3)]);
      await waitFor('100 removals and a weight change', async () => (batches().length === firstBurstBatches + 1 ? true : undefined), 20_000);
      assert.deepEqual(batches()[firstBurstBatches]?.kinds, { 'remove-server': 100, 'set-weight': 1 });
      assert.equal(sidecar.messages('reloading haproxy').length, 0);
    } finally {
      await stop(sidecar);
    }
  });

  test('a malformed instance is left out and logged once; a leaf rotation and new instances still apply', async () => {
    const sidecar = await startSidecar();
    try {
      sidecar.consul.setEndpoints(API, [endpoint('node-1', '127.0.0.1', 1), endpoint('node-2', 'bad host#1', 2)]);
      await waitFor('the bad instance reported', async () => sidecar.messages('endpoint left out of the configuration; everything else keeps updating')[0], 10_000);
      // Other changes keep flowing: a new leaf and another good instance.
      sidecar.consul.setLeaf('web', { ...webLeaf(), certPem: PEM.apiCert, privateKeyPem: PEM.apiKey, serialNumber: 'cafe', modifyIndex: 99 });
      sidecar.consul.setEndpoints(API, [endpoint('node-1', '127.0.0.1', 1), endpoint('node-2', 'bad host#1', 2), endpoint('node-3', '127.0.0.1', 3)]);
      const batches = (): Array<Record<string, unknown>> => sidecar.messages('applied runtime changes');
      await waitFor(
        'the leaf and node-3 applied at runtime',
        async () => {
          const kinds = batches().flatMap((b) => Object.keys(b.kinds as object));
          return kinds.includes('set-leaf') && kinds.includes('add-server') ? true : undefined;
        },
        10_000,
      );
      assert.equal(sidecar.messages('endpoint left out of the configuration; everything else keeps updating').length, 1, 'logged once while it stays bad');
      assert.equal(sidecar.messages('cannot translate the snapshot; keeping the last good configuration').length, 0);
      assert.equal(sidecar.messages('reloading haproxy').length, 0);
    } finally {
      await stop(sidecar);
    }
  });

  test('a first snapshot that leaves no safe configuration stops the start (run rejects), nothing left behind', async () => {
    const consul = await fakeWebAgent([]);
    consul.setRoots(roots({ roots: [{ id: 'garbage', rootCertPem: 'not a certificate', intermediateCertsPem: [], active: true }] }));
    const dir = await mkdtemp(join(base, 'fatal-'));
    const logs = captureLogs('debug');
    await assert.rejects(
      run(webSidecarConfig(consul, dir), new AbortController().signal, { logger: logs.logger, consul }),
      (err: unknown) => err instanceof HaproxyConnectError && err.code === 'MODEL_INVALID' && /none of the 1 CA roots/.test(err.message),
    );
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith('haproxy-connect-')),
      [],
    );
  });

  test('the registration switched to another service: its callers are judged by the new intentions at once, not ready until its leaf arrives', async () => {
    const consul = await fakeWebAgent([]);
    // web's intentions: Consul's default (allow). billing's: deny by default.
    consul.setIntentions({ name: 'billing', namespace: 'default' }, { intentions: [], defaultAllow: false });
    const statsPort = await freePort();
    const logs = captureLogs('debug');
    const shutdown = new AbortController();
    const config = webSidecarConfig(consul, base, { enforceIntentions: true, stats: { listen: { host: '127.0.0.1', port: statsPort }, registerService: false } });
    const done = run(config, shutdown.signal, { logger: logs.logger, consul });
    const messages = (msg: string): Array<Record<string, unknown>> => logs.lines.filter((l) => l.msg === msg);
    try {
      // A start error ends the wait with its reason instead of a timeout.
      await Promise.race([waitFor('sidecar ready', async () => messages('sidecar ready')[0], 30_000), done.then(() => assert.fail('run ended before ready'))]);
      const registration = (await consul.proxyRegistration('web-sidecar-proxy', {}, shutdown.signal)).value;
      const probe = (): Promise<string> => tlsHttpProbe({ port: registration.publicListener.bindPort, ca: PEM.ca, cert: PEM.apiCert, key: PEM.apiKey, timeoutMs: 3_000 });
      const decisions = async (result: string): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${statsPort}/metrics`)).text();
        return Number(text.match(new RegExp(`^haproxy_connect_intention_decisions_total\\{result="${result}"\\} (\\d+)`, 'm'))?.[1] ?? 0);
      };
      const ready = async (): Promise<string> => {
        const res = await fetch(`http://127.0.0.1:${statsPort}/ready`);
        return `${res.status} ${(await res.text()).trim()}`;
      };
      await probe();
      assert.equal(await decisions('allow'), 1, "api is allowed by web's intentions");
      assert.equal(await ready(), '200 ready');

      consul.setRegistration({ ...registration, serviceName: 'billing', serviceId: 'billing' });
      await waitFor('the switch noticed', async () => messages('the proxy fronts another service now: its old leaf and intentions are dropped; not ready until the new ones arrive')[0], 10_000);
      assert.match(await ready(), /^503 waiting for leaf.* from Consul \(the proxy fronts another service now\)$/);
      await probe();
      assert.equal(await decisions('deny'), 1, 'the same caller is denied now');
      assert.equal(await decisions('allow'), 1);
    } finally {
      shutdown.abort(new Error('test done'));
      await done;
    }
  });

  test('Consul errors keep the last good configuration and watching resumes', async () => {
    const sidecar = await startSidecar();
    try {
      const unreachable = new HaproxyConnectError('CONSUL_UNREACHABLE', 'Cannot reach Consul agent at fake: test');
      sidecar.consul.failNext(3, unreachable, 'upstreamEndpoints');
      sidecar.consul.expireBlockingQueries();
      await waitFor('three failures logged', async () => (sidecar.messages('watch failed; keeping the last good value and retrying').length >= 3 ? true : undefined), 20_000);
      const failure = sidecar.messages('watch failed; keeping the last good value and retrying')[0];
      assert.equal(failure?.code, 'CONSUL_UNREACHABLE');
      assert.equal(failure?.watch, 'target:api.default.default.dc1');
      sidecar.consul.setEndpoints(API, [endpoint('node-2', '127.0.0.2', 7)]);
      const cfg = join(sidecar.runDir(), 'haproxy.cfg');
      await waitFor('the update after the outage', async () => ((await readFile(cfg, 'utf8')).includes('127.0.0.2:7 ') ? true : undefined), 20_000);
    } finally {
      await stop(sidecar);
    }
  });

  test('with intentions enforced, the SPOE agent serves before haproxy starts and a change moves the epoch at runtime', async () => {
    const sidecar = await startSidecar(true);
    try {
      assert.equal(sidecar.messages('intentions enforced').length, 1);
      await stat(join(sidecar.runDir(), 'spoe.sock'));
      const cfg = await readFile(join(sidecar.runDir(), 'haproxy.cfg'), 'utf8');
      assert.match(cfg, /filter spoe engine intentions/);
      sidecar.consul.setIntentions({ name: 'web', namespace: 'default' }, { intentions: [], defaultAllow: false });
      await waitFor('the epoch update', async () => sidecar.messages('applied runtime changes').find((m) => (m.kinds as Record<string, number>)['set-intentions-epoch'] === 1), 20_000);
      assert.equal(sidecar.messages('reloading haproxy').length, 0);
    } finally {
      await stop(sidecar);
    }
    assert.equal(sidecar.messages('intentions agent stopped').length, 1);
  });

  test('shutdown removes the run directory', async () => {
    const sidecar = await startSidecar();
    const runDir = sidecar.runDir();
    await stop(sidecar);
    await assert.rejects(readFile(join(runDir, 'haproxy.cfg')), /ENOENT/);
    assert.ok(sidecar.messages('stopped').length === 1);
  });
  test('drift is detected and repaired: a server disabled behind our back comes back', async () => {
    const sidecar = await startSidecar(false, 300);
    try {
      const session = await RuntimeSession.open(join(sidecar.runDir(), 'admin.sock'));
      try {
        const state = parseServersState(await session.send('show servers state'));
        const server = state.find((s) => s.name.startsWith('node-1'));
        assert.ok(server !== undefined, JSON.stringify(state));
        await session.send(`disable server ${server.backend}/${server.name}`);
      } finally {
        session.close();
      }
      const repaired = await waitFor('the drift repair', async () => sidecar.messages('haproxy drifted from the applied configuration; repairing with a reload')[0], 10_000);
      assert.match(JSON.stringify(repaired.drift), /is in maintenance/);
      await waitFor(
        'the server back in service',
        async () => {
          const again = await RuntimeSession.open(join(sidecar.runDir(), 'admin.sock'));
          try {
            const live = parseServersState(await again.send('show servers state')).find((s) => s.name.startsWith('node-1'));
            return live !== undefined && !live.maintenance ? true : undefined;
          } finally {
            again.close();
          }
        },
        10_000,
      );
    } finally {
      await stop(sidecar);
    }
  });

  test('a CA root dropped by Consul is removed through one reload', async () => {
    const sidecar = await startSidecar();
    try {
      const both = roots({
        roots: [
          { id: ACTIVE_ROOT_ID, rootCertPem: PEM.ca, intermediateCertsPem: [], active: true },
          { id: PREVIOUS_ROOT_ID, rootCertPem: PEM.ca2, intermediateCertsPem: [], active: false },
        ],
      });
      sidecar.consul.setRoots(both);
      await waitFor('the root added', async () => sidecar.messages('reloading haproxy').find((l) => JSON.stringify(l.reasons).includes('1 added, 0 removed')), 10_000);
      sidecar.consul.setRoots(roots());
      await waitFor('the old root dropped', async () => sidecar.messages('reloading haproxy').find((l) => JSON.stringify(l.reasons).includes('0 added, 1 removed')), 10_000);
      // The reload is logged before its files are written: wait for the bundle, as a reader would.
      const certificates = async (): Promise<number> => (await readFile(join(sidecar.runDir(), 'roots.pem'), 'utf8')).match(/BEGIN CERTIFICATE/g)?.length ?? 0;
      await waitFor('roots.pem holds the active root alone', async () => ((await certificates()) === 1 ? true : undefined), 10_000);
      assert.equal(sidecar.messages('reloading haproxy').length, 2);
    } finally {
      await stop(sidecar);
    }
  });
});
