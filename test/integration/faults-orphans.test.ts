/**
 * Faults: a SIGKILLed daemon leaves nothing behind that hurts its successor, with a real Consul dev
 * agent and real HAProxy (web -> api mesh). A second daemon for a proxy that is served is refused;
 * a daemon started after a SIGKILL stops the orphaned HAProxy (master and workers), removes the old
 * run directory and is the only HAProxy on the port; HAProxy runs without the daemon's CONSUL_*
 * environment; a second HAProxy on one of our ports fails to bind (noreuseport), and a daemon whose
 * port is taken says so and recovers when it is free.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, type RunningApp } from '../../devtools/apps.js';
import { ConsulDevAgent, checksPassing, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet } from '../../devtools/probes.js';
import { isAlive, tcpListeners } from '../../devtools/proc.js';
import { SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { parseShowProc, sendCommand } from '../../src/driver/master-cli.js';
import { ownerRecordPath } from '../../src/driver/owner-record.js';
import { findRunDirHaproxy } from '../../src/driver/orphans.js';
import { procStat } from '../../src/driver/pids.js';
import { MASTER_SOCKET } from '../../src/main.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const REQUESTS = 40;
/** Requests in flight at once: more than web's sidecar has pooled, so new connections reach api's port. */
const PARALLEL = 8;
const TOKEN = 'faults-orphans-token-5d1c';

let agent: ConsulDevAgent;
let baseDir: string;
let app: RunningApp;
const sidecars: SidecarProcess[] = [];
/** Processes this file started outside SidecarProcess (and orphans it created), killed by pid in `after`. */
const strays = new Set<number>();
let ports: Record<string, number>;

const apiArgs = (): string[] => ['-sidecar-for', 'api', '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', baseDir, '-log-level', 'debug'];
/** The api daemon runs with a token in its environment: HAProxy must not inherit it. */
const startApi = (): SidecarProcess => {
  const sidecar = new SidecarProcess(apiArgs(), { CONSUL_HTTP_TOKEN: TOKEN });
  sidecars.push(sidecar);
  return sidecar;
};

interface HaproxyPids {
  runDir: string;
  master: number;
  workers: number[];
}

async function haproxyOf(sidecar: SidecarProcess): Promise<HaproxyPids> {
  const runDir = sidecar.find('created run directory')?.runDir as string;
  const proc = parseShowProc(await sendCommand(join(runDir, MASTER_SOCKET), 'show proc', { timeoutMs: 5_000 }));
  return { runDir, master: proc.master.pid, workers: proc.workers.map((w) => w.pid) };
}

/**
 * `count` requests web -> api, one client connection each, `parallel` at a time; returns how many
 * api answered. In parallel, web's sidecar opens new connections to api's public port (it pools
 * them otherwise), which is where a stale HAProxy sharing the port shows: measured on the code
 * before the owner record, 30 of 40 parallel requests succeeded after a SIGKILL and restart (10
 * answered 502 by the orphan, whose intentions agent died with the daemon), 40 of 40 sequential ones.
 */
async function requestsThroughMesh(count: number, parallel = 1): Promise<{ ok: number; failures: string[] }> {
  let ok = 0;
  const failures: string[] = [];
  for (let sent = 0; sent < count; sent += parallel) {
    const batch = await Promise.all(Array.from({ length: Math.min(parallel, count - sent) }, () => httpGet(ports.webToApi as number).catch((err: unknown) => ({ status: 0, body: String(err) }))));
    for (const res of batch) {
      if (res.status === 200 && res.body === 'hello from api') ok++;
      else failures.push(`${res.status} ${res.body.slice(0, 120)}`);
    }
  }
  return { ok, failures };
}

function environ(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .filter((e) => e !== '');
}

/** A plain HAProxy (not ours: SO_REUSEPORT as by default) listening on `port`. */
async function foreignHaproxy(port: number, dir: string): Promise<{ child: ChildProcess; output: () => string; exited: Promise<number | null> }> {
  const cfg = join(dir, `foreign-${port}.cfg`);
  await writeFile(
    cfg,
    [
      'defaults',
      '    mode http',
      '    timeout connect 1s',
      '    timeout client 5s',
      '    timeout server 5s',
      'frontend foreign',
      `    bind 127.0.0.1:${port}`,
      '    http-request return status 200 content-type text/plain string foreign',
      '',
    ].join('\n'),
  );
  const child = spawn(HAPROXY_BIN, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  strays.add(child.pid as number);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-orphans-'));
  const names = ['api', 'apiSidecar', 'web', 'webSidecar', 'webToApi'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  app = await startHttpApp('api', ports.api as number);
  await registerMeshService(agent, { id: 'api', name: 'api', port: ports.api as number, sidecarPort: ports.apiSidecar as number, protocol: 'http' });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web as number,
    sidecarPort: ports.webSidecar as number,
    protocol: 'http',
    upstreams: [{ destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' }],
  });
  await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir);
  await startApi().waitForLog('sidecar ready');
  await waitFor('web -> api through the mesh', async () => ((await httpGet(ports.webToApi as number).catch(() => undefined))?.status === 200 ? true : undefined), 30_000, 100);
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  for (const pid of strays) {
    try {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  await app?.close();
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

/** The api daemon that runs now. */
const runningApi = (): SidecarProcess => {
  const running = sidecars.filter((s) => s.process.exitCode === null && s.process.signalCode === null && s.logs.some((l) => l.proxyId === 'api-sidecar-proxy'));
  assert.equal(running.length, 1, `api daemons running: ${running.map((s) => s.pid).join(', ')}`);
  return running[0] as SidecarProcess;
};

describe('faults: orphans after SIGKILL, one daemon per proxy, a minimal environment', () => {
  test('a second daemon for the same proxy is refused with SIDECAR_ALREADY_RUNNING; the first keeps serving', async () => {
    const first = runningApi();
    const before = await haproxyOf(first);
    const second = startApi();
    const { code } = await second.exited;
    assert.equal(code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`haproxy-connect pid ${first.pid} already serves proxy 'api-sidecar-proxy'`));
    const fatal = second.logs.find((l) => l.msg === 'haproxy-connect cannot run');
    assert.equal(fatal?.code, 'SIDECAR_ALREADY_RUNNING', JSON.stringify(fatal));
    assert.equal(second.find('created run directory'), undefined, 'the refused daemon made a run directory');
    const after = await haproxyOf(first);
    assert.deepEqual(after, before, 'the running haproxy was touched');
    assert.equal((await requestsThroughMesh(5)).ok, 5);
  });

  test("haproxy runs without the daemon's CONSUL_* variables (/proc/<pid>/environ)", async () => {
    const api = runningApi();
    assert.ok(environ(api.pid).includes(`CONSUL_HTTP_TOKEN=${TOKEN}`), 'the daemon itself has the token (test set-up)');
    const { master, workers } = await haproxyOf(api);
    for (const pid of [master, ...workers]) {
      const env = environ(pid);
      const leaked = env.filter((e) => e.startsWith('CONSUL_') || e.includes(TOKEN));
      assert.deepEqual(leaked, [], `haproxy pid ${pid} inherited ${leaked.join(', ')}`);
      assert.ok(
        env.some((e) => e.startsWith('PATH=')),
        `haproxy pid ${pid}: ${env.join(' ')}`,
      );
    }
  });

  test('after SIGKILL of the daemon, the next one stops the orphaned haproxy, removes its run directory and serves alone', async () => {
    const killed = runningApi();
    const old = await haproxyOf(killed);
    assert.equal((await requestsThroughMesh(5)).ok, 5);
    const record = ownerRecordPath(baseDir, 'api-sidecar-proxy');
    assert.ok(existsSync(record), `owner record ${record}`);

    process.kill(killed.pid, 'SIGKILL');
    await killed.exited;
    // The fault: HAProxy runs detached and outlives the daemon, with its run directory (and key).
    for (const pid of [old.master, ...old.workers]) strays.add(pid);
    assert.ok(isAlive(old.master) && old.workers.every(isAlive), 'haproxy died with the daemon: nothing to test');
    assert.ok(existsSync(join(old.runDir, 'haproxy.cfg')));

    // Requests web -> api all along: until the orphan is stopped, web's pooled connections to it
    // may still get answers, so recovery counts from the first success after that.
    const restartedAt = Date.now();
    const samples: Array<{ at: number; end: number; ok: boolean; answer: string }> = [];
    let polling = true;
    const poller = (async () => {
      const deadline = Date.now() + 90_000;
      while (polling && Date.now() < deadline) {
        const at = Date.now();
        const res = await httpGet(ports.webToApi as number, '/', 2_000).catch(() => undefined);
        samples.push({ at, end: Date.now(), ok: res?.status === 200 && res.body === 'hello from api', answer: res === undefined ? 'no answer' : `${res.status}` });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const api = startApi();
    let recovery: { orphanStoppedMs: number; firstSuccessMs: number; readyMs: number; failed: string[]; beforeStop: number };
    try {
      const ready = await api.waitForLog('sidecar ready');
      const stoppedAt = Date.parse(api.find('stopped the orphaned haproxy')?.time as string);
      // Sent after the orphan was gone, so answered through the new HAProxy (web's may retry a refused connect meanwhile).
      const firstSuccess = await waitFor('the first request through the new haproxy', async () => samples.find((x) => x.ok && x.at >= stoppedAt), 30_000, 20);
      recovery = {
        orphanStoppedMs: stoppedAt - restartedAt,
        firstSuccessMs: firstSuccess.end - restartedAt,
        readyMs: Date.parse(ready.time as string) - restartedAt,
        failed: samples.filter((x) => !x.ok).map((x) => `${x.answer} at +${x.at - restartedAt} ms`),
        beforeStop: samples.filter((x) => x.ok && x.at < stoppedAt).length,
      };
    } finally {
      polling = false;
      await poller;
    }

    assert.deepEqual([old.master, ...old.workers].filter(isAlive), [], 'old haproxy pids still running');
    // With -dataplane, the killed daemon's Data Plane API too.
    assert.deepEqual(findRunDirHaproxy(old.runDir), [], 'processes of the old run directory still running');
    assert.equal(existsSync(old.runDir), false, `old run directory ${old.runDir} left behind`);
    const gone = api.find('the previous haproxy-connect for this proxy is gone without cleaning up; cleaning up after it');
    assert.equal(gone?.previousPid, killed.pid, JSON.stringify(gone));
    assert.equal(gone?.runDir, old.runDir);
    assert.equal(gone?.haproxyMasterPid, old.master);
    const stopping = api.find('stopping the haproxy left running by the previous haproxy-connect (SIGTERM)');
    assert.deepEqual(stopping?.masters, [old.master], JSON.stringify(stopping));
    assert.deepEqual([...((stopping?.workers ?? []) as number[])].sort(), [...old.workers].sort());
    assert.ok(api.find('stopped the orphaned haproxy'));
    assert.ok(api.logs.some((l) => l.msg === 'removed the run directory of the previous run' && l.runDir === old.runDir));

    // Exactly one HAProxy listens on api's public port: the new one.
    const fresh = await haproxyOf(api);
    const listeners = tcpListeners(ports.apiSidecar as number);
    assert.equal(listeners.length, 1, `listening sockets on ${ports.apiSidecar}: ${JSON.stringify(listeners)}`);
    for (const pid of listeners[0]?.pids ?? []) assert.equal(procStat(pid)?.pgrp, fresh.master, `pid ${pid} holds the listener but is not of the new haproxy`);

    // api's sidecar has a TCP check every second (registerMeshService): when it ran between the
    // orphan's stop and the new HAProxy's bind, Consul reports api critical and web has no api
    // endpoint until the next check passes (seen in CI: 40 of 40 answered 503 by web). That is
    // Consul's view of the gap, not the takeover under test: wait for the check, then for web.
    await checksPassing(agent, 'api-sidecar-proxy', 10_000, 50);
    await waitFor('web -> api through the new haproxy', async () => ((await httpGet(ports.webToApi as number).catch(() => undefined))?.status === 200 ? true : undefined), 10_000, 20);
    const after = await requestsThroughMesh(REQUESTS, PARALLEL);
    assert.equal(after.ok, REQUESTS, after.failures.join('\n'));
    process.stdout.write(
      `# SIGKILL recovery: restart -> orphan stopped ${recovery.orphanStoppedMs} ms, -> daemon ready ${recovery.readyMs} ms, -> first success through the new haproxy ${recovery.firstSuccessMs} ms; ` +
        `probes: ${recovery.beforeStop} answered by the orphan before it was stopped, ${recovery.failed.length} failed of ${samples.length} ${JSON.stringify(recovery.failed)}; ${after.ok}/${REQUESTS} requests ok afterwards (${PARALLEL} at a time)\n`,
    );
  });

  test('a second HAProxy on our port fails to bind (noreuseport) instead of sharing it', async () => {
    const api = runningApi();
    const foreign = await foreignHaproxy(ports.apiSidecar as number, baseDir);
    const code = await Promise.race([foreign.exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 5_000))]);
    assert.equal(code, 1, `the second haproxy ${code === 'running' ? 'is running' : `exited with ${code}`}: ${foreign.output()}`);
    assert.match(foreign.output(), /cannot bind socket \(Address already in use\)/);
    assert.equal(tcpListeners(ports.apiSidecar as number).length, 1);
    assert.equal(api.process.exitCode, null);
    process.stdout.write(
      `# second haproxy on the port: ${foreign
        .output()
        .split('\n')
        .filter((l) => l.includes('[ALERT]'))
        .join(' | ')}\n`,
    );
  });

  test('a daemon whose port another HAProxy holds logs the bind failure, retries, and serves once the port is free', async () => {
    const stopped = runningApi();
    const { runDir } = await haproxyOf(stopped);
    assert.equal((await stopped.stop()).code, 0);
    assert.equal(existsSync(ownerRecordPath(baseDir, 'api-sidecar-proxy')), false, 'a clean exit removes the owner record');
    assert.equal(existsSync(runDir), false);

    const foreign = await foreignHaproxy(ports.apiSidecar as number, baseDir);
    await waitFor('the foreign haproxy to listen', async () => (tcpListeners(ports.apiSidecar as number).length === 1 ? true : undefined), 5_000, 20);
    const api = startApi();
    const failed = await api.waitForLog('applying the configuration failed; the last good configuration keeps serving');
    assert.equal(failed.code, 'HAPROXY_START_FAILED', JSON.stringify(failed));
    assert.match(failed.err as string, /cannot bind socket \(Address already in use\)/);
    const alert = api.logs.find((l) => typeof l.msg === 'string' && l.msg.includes('cannot bind socket'));
    process.stdout.write(`# daemon with its port taken: ${JSON.stringify({ level: failed.level, code: failed.code, err: failed.err })}\n# haproxy line: ${JSON.stringify(alert)}\n`);

    foreign.child.kill('SIGTERM');
    await foreign.exited;
    await api.waitForLog('sidecar ready');
    const after = await waitFor(
      'api through the mesh again',
      async () => {
        const result = await requestsThroughMesh(REQUESTS);
        return result.ok === REQUESTS ? result : undefined;
      },
      30_000,
      200,
    );
    assert.equal(after.ok, REQUESTS);
  });
});
