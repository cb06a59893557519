/**
 * Consul's discovery chain (service-resolver config entries), with a real Consul dev agent and
 * real HAProxy: web's sidecar has `api` as an HTTP upstream and `echo` as a TCP upstream; `api` has
 * three instances (api-v1 with Meta version=v1, api-v2a and api-v2b with version=v2), and the
 * services `api-other` (instances blue and green, Meta color) and `api-backup` stand by for
 * redirects and failover. Every app answers `hello from <instance id>`, so the tests see which
 * instance served. Each test starts from no resolver, every check passing and every app fast.
 *
 * What web's sidecar must do (as Envoy does with Consul's chain):
 * - DefaultSubset: only the default subset's instances serve;
 * - OnlyPassing: a subset with OnlyPassing leaves an instance with a warning check out, one without
 *   keeps it (warning is healthy unless OnlyPassing);
 * - Redirect: to another service, and to a subset of another service;
 * - Failover: every api instance critical → api-backup serves, under load, with few failed requests;
 * - ConnectTimeout: a request to an instance whose connect hangs fails after the resolver's timeout;
 * - LoadBalancer: least_request prefers the idle instance; ring_hash on a header is sticky;
 * - a resolver change under traffic: 0 failed requests, at most one reload;
 * - an upstream removed from the registration: its chain and target watches stop.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { startHangingListener, startTcpEcho, startTunableHttpApp, type RunningApp, type TunableHttpApp } from '../../devtools/apps.js';
import { ConsulDevAgent, registerMeshService, registerMeshServiceWithMeta, type MeshServiceSpec } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { tcpExchange } from '../../devtools/probes.js';
import { lastChangeLive, msSince, note, type SidecarProcess, startReadySidecar } from '../../devtools/sidecar.js';
import { Traffic, waitForAnswers } from '../../devtools/traffic.js';
import { parseExposition, sampleSum, type Exposition } from '../helpers/prometheus.js';
import { explainedBy, type MeshInstance, VERSION_SUBSETS } from '../../devtools/explained.js';

/** Requests of the "only these instances answer" samples. */
const SAMPLE_REQUESTS = 40;
/** Failed requests allowed while traffic fails over to api-backup and back, as a share of all requests then. */
const MAX_FAILOVER_FAILED_SHARE = 0.05;
/** The resolver's ConnectTimeout in the connect-timeout test, and HAProxy's default (render.ts). */
const CONNECT_TIMEOUT_MS = 1_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long the busy instance takes to answer in the least_request test. */
const BUSY_DELAY_MS = 300;
/** Concurrent request loops and measuring window of the least_request test. */
const LB_CONCURRENCY = 8;
const LB_WINDOW_MS = 3_000;
/**
 * least_request: share of the answers the idle instance must give. Round robin gives it half.
 * Envoy's least_request is "power of two choices" (the less loaded of 2 random draws, with
 * replacement): with two instances the busy one is still drawn twice in a quarter of the picks,
 * so the idle one gets about 3/4 (measured 0.76-0.81 here, against 0.50 for round robin). 0.65 is a
 * clear majority that round robin cannot reach.
 */
const MIN_IDLE_SHARE = 0.65;
/** ring_hash: distinct `x-user` values, and requests per value. */
const HASH_USERS = 10;
const HASH_REQUESTS_PER_USER = 5;

const API = ['api-v1', 'api-v2a', 'api-v2b'] as const;
const V2 = ['api-v2a', 'api-v2b'];

type Instance = MeshInstance;
const INSTANCES: readonly Instance[] = [
  { id: 'api-v1', name: 'api', key: 'apiV1', meta: { version: 'v1' } },
  { id: 'api-v2a', name: 'api', key: 'apiV2a', meta: { version: 'v2' } },
  { id: 'api-v2b', name: 'api', key: 'apiV2b', meta: { version: 'v2' } },
  { id: 'api-other-blue', name: 'api-other', key: 'otherBlue', meta: { color: 'blue' } },
  { id: 'api-other-green', name: 'api-other', key: 'otherGreen', meta: { color: 'green' } },
  { id: 'api-backup', name: 'api-backup', key: 'backup', meta: {} },
];

let agent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const tunable = new Map<string, TunableHttpApp>();
const sidecars = new Map<string, SidecarProcess>();
let ports: Record<string, number>;
let webSpec: MeshServiceSpec;
let hanging: RunningApp | undefined;

const port = (name: string): number => {
  const value = ports[name];
  if (value === undefined) throw new Error(`no port ${name}`);
  return value;
};
const hello = (id: string): string => `hello from ${id}`;
const web = (): SidecarProcess => sidecars.get('web') as SidecarProcess;
const count = (sidecar: SidecarProcess, msg: string, from = 0): number => sidecar.logs.slice(from).filter((l) => l.msg === msg).length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function writeResolver(name: string, body: Record<string, unknown>): Promise<void> {
  await agent.put('/v1/config', { Kind: 'service-resolver', Name: name, ...body });
}

async function deleteConfig(kind: string, name: string): Promise<void> {
  const res = await agent.fetch(`/v1/config/${kind}/${name}`, { method: 'DELETE' });
  if (!res.ok) throw new Error(`DELETE ${kind}/${name} failed: ${res.status} ${await res.text()}`);
}

/** GET through web's api upstream on a new connection: status and body, or `error: <reason>`. */
async function viaWeb(headers: Record<string, string> = {}, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port('webToApi')}/`, { headers: { connection: 'close', ...headers }, signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, body: await res.text() };
  } catch (err) {
    return { status: 0, body: `error: ${(err as Error).message}` };
  }
}

/** Who answered `n` sequential requests through web's api upstream (a failure counts as `status <n>: <body>`). */
async function sample(n = SAMPLE_REQUESTS, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const { status, body } = await viaWeb(headers);
    const key = status === 200 ? body : `status ${status}: ${body.slice(0, 120)}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return seen;
}

const show = (answers: Map<string, number>): string => JSON.stringify(Object.fromEntries(answers));

/** What web's sidecar did and what Consul compiled for `api`, for failure messages. */
async function context(): Promise<string> {
  const lines: string[] = [];
  try {
    const chain = await agent.get<{ Chain: { Protocol: string; Targets: Record<string, unknown>; Nodes: Record<string, unknown> } }>('/v1/discovery-chain/api');
    lines.push(`consul's chain for api: targets ${Object.keys(chain.Chain.Targets).join(', ')}; nodes ${Object.keys(chain.Chain.Nodes).join(', ')}`);
  } catch (err) {
    lines.push(`consul's chain for api: ${(err as Error).message}`);
  }
  const interesting = ['reloading haproxy', 'haproxy reloaded', 'applied runtime changes', 'waiting for the first endpoints of new upstreams'];
  for (const l of sidecars.get('web')?.logs.filter((l) => interesting.includes(l.msg as string) || l.level === 'warn' || l.level === 'error') ?? []) {
    lines.push(
      `${l.time as string} web ${l.msg as string} ${JSON.stringify({ reasons: l.reasons, kinds: l.kinds, failures: l.failures, watch: l.watch, err: l.err, targets: l.targets, item: l.item })}`,
    );
  }
  return lines.slice(-40).join('\n');
}

/** Runs `step`; a failure carries web's recent history and Consul's compiled chain. */
const explained = explainedBy(context);

/** Waits until traffic through web's api upstream is answered by exactly these instances. */
async function waitForOnly(ids: readonly string[], timeoutMs = 30_000): Promise<void> {
  const traffic = new Traffic(port('webToApi'), 2, timeoutMs + 10_000);
  try {
    await explained(waitForAnswers(traffic, ids, timeoutMs));
  } finally {
    await traffic.stop();
  }
}

/** Asserts that `answers` holds only (and every one of) `ids`. */
function assertAnsweredBy(answers: Map<string, number>, ids: readonly string[], what: string): void {
  assert.deepEqual([...answers.keys()].sort(), ids.map(hello).sort(), `${what}: ${show(answers)}`);
}

function runDir(sidecar: SidecarProcess): string {
  const dir = sidecar.find('created run directory')?.runDir;
  if (typeof dir !== 'string') throw new Error('no run directory logged');
  return dir;
}

/** The haproxy.cfg web's sidecar last applied (persisted after runtime changes as well as reloads). */
async function webConfig(): Promise<string> {
  return readFile(join(runDir(web()), 'haproxy.cfg'), 'utf8');
}

/** The sections of an haproxy.cfg (a header line and its indented lines), by header. */
function sections(cfg: string): Array<{ header: string; lines: string[] }> {
  const out: Array<{ header: string; lines: string[] }> = [];
  for (const line of cfg.split('\n')) {
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) out.push({ header: line.trim(), lines: [] });
    else out.at(-1)?.lines.push(line.trim());
  }
  return out;
}

/**
 * Waits until web's applied haproxy.cfg satisfies `ready` and no reload started after `mark` (a log
 * index) is still in flight.
 */
async function waitForWebConfig(what: string, mark: number, ready: (cfg: string) => boolean, timeoutMs = 30_000): Promise<string> {
  return explained(
    waitFor(
      what,
      async () => {
        const logs = web().logs.slice(mark);
        const lastReload = logs.findLastIndex((l) => l.msg === 'reloading haproxy');
        if (lastReload >= 0 && !logs.slice(lastReload).some((l) => l.msg === 'haproxy reloaded')) return undefined;
        const cfg = await webConfig();
        return ready(cfg) && lastChangeLive(web().logs, mark) ? cfg : undefined;
      },
      timeoutMs,
      100,
    ),
  );
}

async function scrapeWeb(): Promise<Exposition> {
  const res = await fetch(`http://127.0.0.1:${port('webStats')}/metrics`, { signal: AbortSignal.timeout(3_000) });
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

/**
 * Running watches of web's sidecar of one kind, in any state. The gauge counts watches by the
 * part of their name before ':' (metric-labels.ts): `chain:<upstream key>` as `chain`, and
 * `target:<target id>` as `upstream`.
 */
const watches = (e: Exposition, kind: 'chain' | 'upstream'): number => sampleSum(e, 'haproxy_connect_consul_watches', { watch: kind });

async function setCheck(id: string, state: 'pass' | 'warn' | 'fail'): Promise<void> {
  await agent.put(`/v1/agent/check/${state}/${id}-ttl`);
}

/** Back to the start: no resolver, every check passing, every app fast, traffic over all api instances. */
async function reset(): Promise<void> {
  for (const app of tunable.values()) app.delayMs = 0;
  await deleteConfig('service-resolver', 'api');
  await deleteConfig('service-resolver', 'api-other');
  await Promise.all(INSTANCES.map((i) => setCheck(i.id, 'pass')));
  await waitForOnly(API);
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-chain-'));
  const names = [...INSTANCES.flatMap((i) => [i.key, `${i.key}Sidecar`]), 'echo', 'echoSidecar', 'web', 'webSidecar', 'webToApi', 'webToEcho', 'webStats', 'stuck', 'stuckApp'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  // One protocol for every service a chain of api can reach (Consul refuses a chain with mixed protocols).
  for (const name of ['api', 'api-other', 'api-backup']) await agent.put('/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
  for (const instance of INSTANCES) {
    const app = await startTunableHttpApp(instance.id, port(instance.key));
    apps.push(app);
    tunable.set(instance.id, app);
    await registerMeshServiceWithMeta(
      agent,
      { id: instance.id, name: instance.name, port: port(instance.key), sidecarPort: port(`${instance.key}Sidecar`), protocol: 'http', ttlCheck: true },
      instance.meta,
    );
  }
  apps.push(await startTcpEcho('echo', port('echo')));
  await registerMeshService(agent, { id: 'echo', name: 'echo', port: port('echo'), sidecarPort: port('echoSidecar') });
  webSpec = {
    id: 'web',
    name: 'web',
    port: port('web'),
    sidecarPort: port('webSidecar'),
    protocol: 'http',
    upstreams: [
      { destinationName: 'api', localBindPort: port('webToApi'), protocol: 'http' },
      { destinationName: 'echo', localBindPort: port('webToEcho') },
    ],
  };
  await registerMeshService(agent, webSpec);
  await Promise.all([
    ...[...INSTANCES.map((i) => i.id), 'echo'].map((s) => startReadySidecar(sidecars, s, agent.httpAddr, baseDir)),
    startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir, ['-stats-addr', `127.0.0.1:${port('webStats')}`]),
  ]);
});

after(async () => {
  await hanging?.close();
  await Promise.all([...sidecars.values()].map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('discovery chain (service-resolver) with real Consul and HAProxy', () => {
  test('DefaultSubset: without a resolver v1 and v2 answer; with DefaultSubset v2 only the v2 instances do', async () => {
    await waitForOnly(API);
    assertAnsweredBy(await sample(), API, 'before any resolver');
    // The set-up, not the sidecar: Consul selects the subsets on the proxies' inherited Meta.
    const v2Proxies = await agent.get<Array<{ Service: { ID: string } }>>(`/v1/health/connect/api?filter=${encodeURIComponent(VERSION_SUBSETS.v2.Filter)}`);
    assert.deepEqual(v2Proxies.map((e) => e.Service.ID).sort(), ['api-v2a-sidecar-proxy', 'api-v2b-sidecar-proxy']);

    await writeResolver('api', { DefaultSubset: 'v2', Subsets: VERSION_SUBSETS });
    await waitForOnly(V2);
    const answers = await sample();
    note(`DefaultSubset v2: ${SAMPLE_REQUESTS} requests answered ${show(answers)}`);
    assertAnsweredBy(answers, V2, 'with DefaultSubset v2');
  });

  test('OnlyPassing: an instance with a warning check gets no traffic in an OnlyPassing subset, and gets it again without', async () => {
    await reset();
    const subsets = (onlyPassing: boolean): Record<string, unknown> => ({ ...VERSION_SUBSETS, v2: { ...VERSION_SUBSETS.v2, OnlyPassing: onlyPassing } });
    try {
      await writeResolver('api', { DefaultSubset: 'v2', Subsets: subsets(true) });
      await waitForOnly(V2);
      await setCheck('api-v2b', 'warn');
      await waitForOnly(['api-v2a']);
      const onlyPassing = await sample();
      assertAnsweredBy(onlyPassing, ['api-v2a'], 'OnlyPassing with api-v2b warning');

      await writeResolver('api', { DefaultSubset: 'v2', Subsets: subsets(false) });
      await waitForOnly(V2);
      const warningServes = await sample();
      note(`api-v2b warning: OnlyPassing true ${show(onlyPassing)}; OnlyPassing false ${show(warningServes)}`);
      assertAnsweredBy(warningServes, V2, 'without OnlyPassing a warning instance is healthy');
    } finally {
      await setCheck('api-v2b', 'pass');
    }
  });

  test('Redirect: to another service, and to a subset of another service', async () => {
    await reset();
    await writeResolver('api', { Redirect: { Service: 'api-other' } });
    await waitForOnly(['api-other-blue', 'api-other-green']);
    const redirected = await sample();
    assertAnsweredBy(redirected, ['api-other-blue', 'api-other-green'], 'redirected to api-other');

    await writeResolver('api-other', { Subsets: { blue: { Filter: 'Service.Meta.color == blue' } } });
    await writeResolver('api', { Redirect: { Service: 'api-other', ServiceSubset: 'blue' } });
    await waitForOnly(['api-other-blue']);
    const toSubset = await sample();
    note(`redirect to api-other: ${show(redirected)}; to api-other subset blue: ${show(toSubset)}`);
    assertAnsweredBy(toSubset, ['api-other-blue'], 'redirected to api-other subset blue');
  });

  test('Failover: every api instance critical under load moves traffic to api-backup, and back when they pass again', async () => {
    await reset();
    const mark = web().logs.length;
    await writeResolver('api', { Failover: { '*': { Service: 'api-backup' } } });
    // The failover target is live in HAProxy before the switch (else the switch measures the chain's arrival).
    await waitForWebConfig('api-backup in web’s applied configuration', mark, (cfg) => cfg.includes(`127.0.0.1:${port('backupSidecar')}`));
    const traffic = new Traffic(port('webToApi'), 4);
    try {
      await explained(waitForAnswers(traffic, API));
      const start = { ok: traffic.report.ok, failed: traffic.report.failed };
      const failedAt = performance.now();
      await Promise.all(API.map((id) => setCheck(id, 'fail')));
      await explained(waitForAnswers(traffic, ['api-backup']));
      const toBackupMs = msSince(failedAt);
      const duringFailover = traffic.report.failed - start.failed;
      const passedAt = performance.now();
      await Promise.all(API.map((id) => setCheck(id, 'pass')));
      await explained(waitForAnswers(traffic, API));
      const backMs = msSince(passedAt);
      const report = await traffic.stop();
      const total = report.ok - start.ok + report.failed - start.failed;
      const failed = report.failed - start.failed;
      note(
        `failover under load: ${total} requests from the first check failing until api served again, ${failed} failed ` +
          `(${duringFailover} while failing over, ${failed - duringFailover} while failing back); api-backup served ${toBackupMs} ms after the checks failed, api again ${backMs} ms after they passed` +
          `${failed > 0 ? `; e.g. ${report.failures.slice(0, 3).join(' | ')}` : ''}`,
      );
      assert.ok(report.answers.has(hello('api-backup')), 'api-backup served');
      assert.ok(failed <= total * MAX_FAILOVER_FAILED_SHARE, `${failed} of ${total} requests failed: ${report.failures.join('\n')}\n${await context()}`);
    } finally {
      await traffic.stop();
      await Promise.all(API.map((id) => setCheck(id, 'pass')));
    }
  });

  // A connect that hangs on loopback (devtools/apps.ts startHangingListener: a listener whose
  // accept queue is full drops SYNs, so the connect stays in SYN_SENT). HAProxy retries a timed-out
  // connect (`retries 3`, render.ts), so the request fails after up to 4 x ConnectTimeout (measured:
  // 20.0 s with the default 5 s). The bound is therefore "under one default connect timeout" (5 s),
  // which a 5 s timeout cannot meet, and at least one ConnectTimeout; the applied haproxy.cfg must
  // also carry the timeout on the instance's backend.
  test('ConnectTimeout: a request to an instance whose connect hangs fails after the resolver’s timeout, not the default', async () => {
    await reset();
    hanging = await startHangingListener(port('stuck'));
    try {
      // Registered by hand, without checks (a TCP check on the hanging port would turn it critical).
      await agent.put('/v1/agent/service/register', { ID: 'api-stuck', Name: 'api', Port: port('stuckApp'), Address: '127.0.0.1', Meta: { version: 'stuck' } });
      await agent.put('/v1/agent/service/register', {
        Kind: 'connect-proxy',
        ID: 'api-stuck-sidecar-proxy',
        Name: 'api-sidecar-proxy',
        Address: '127.0.0.1',
        Port: port('stuck'),
        Meta: { version: 'stuck' },
        Proxy: { DestinationServiceName: 'api', DestinationServiceID: 'api-stuck', LocalServiceAddress: '127.0.0.1', LocalServicePort: port('stuckApp') },
      });
      const mark = web().logs.length;
      await writeResolver('api', {
        ConnectTimeout: `${CONNECT_TIMEOUT_MS / 1_000}s`,
        DefaultSubset: 'stuck',
        Subsets: { ...VERSION_SUBSETS, stuck: { Filter: 'Service.Meta.version == stuck' } },
      });
      const stuckServer = `127.0.0.1:${port('stuck')}`;
      // The instance's own backend (the resolver's subset), not the default one it may join first
      // (the Data Plane API driver adds it there at runtime before the resolver's reload).
      const servesStuck = (s: { lines: string[] }): boolean =>
        s.lines.some((l) => l.startsWith('server ') && l.includes(stuckServer)) && !s.lines.includes(`timeout connect ${DEFAULT_CONNECT_TIMEOUT_MS / 1_000}s`);
      const cfg = await waitForWebConfig('the hanging instance in web’s applied configuration, in a backend without the default connect timeout', mark, (c) => sections(c).some(servesStuck));
      const backend = sections(cfg).find(servesStuck);
      const timeoutLine = backend?.lines.find((l) => l.startsWith('timeout connect '));
      // What Consul compiles for the targets when asked without an override (as `GET /v1/discovery-chain` does).
      const compiled = await agent.get<{ Chain: { Targets: Record<string, { ConnectTimeout?: number | string }> } }>('/v1/discovery-chain/api');
      const compiledTimeouts = Object.fromEntries(Object.entries(compiled.Chain.Targets).map(([id, t]) => [id, t.ConnectTimeout]));
      const startedAt = performance.now();
      const result = await viaWeb({}, 4 * DEFAULT_CONNECT_TIMEOUT_MS + 5_000);
      const elapsedMs = msSince(startedAt);
      const backendText = `backend ${backend?.header} of the hanging instance:\n${backend?.lines.join('\n')}`;
      note(
        `ConnectTimeout ${CONNECT_TIMEOUT_MS} ms: the request to the hanging instance ended after ${elapsedMs} ms with ${result.status} '${result.body.slice(0, 60).replace(/\s+/g, ' ')}'; ` +
          `web's backend ${backend?.header}: '${timeoutLine}'; Consul's compiled target timeouts ${JSON.stringify(compiledTimeouts)}`,
      );
      assert.notEqual(result.status, 200, `the hanging instance cannot answer: ${result.body}`);
      assert.ok(elapsedMs >= CONNECT_TIMEOUT_MS - 100, `the request ended after ${elapsedMs} ms, before the connect could time out: ${result.body}`);
      assert.ok(elapsedMs < DEFAULT_CONNECT_TIMEOUT_MS, `the request took ${elapsedMs} ms: the resolver's ConnectTimeout was not applied\n${backendText}\n${await context()}`);
      assert.match(timeoutLine ?? '', /^timeout connect (1s|1000ms|1000)$/, backendText);
    } finally {
      await agent.put('/v1/agent/service/deregister/api-stuck-sidecar-proxy').catch(() => undefined);
      await agent.put('/v1/agent/service/deregister/api-stuck').catch(() => undefined);
      await deleteConfig('service-resolver', 'api');
      await hanging.close();
      hanging = undefined;
    }
  });

  test('LoadBalancer least_request: with one instance busy, new requests prefer the idle one', async () => {
    await reset();
    const busy = tunable.get('api-v2a') as TunableHttpApp;
    /** Who answered `LB_CONCURRENCY` loops of requests over `LB_WINDOW_MS`, and the idle instance's share. */
    const measure = async (): Promise<{ answers: Map<string, number>; idleShare: number }> => {
      const traffic = new Traffic(port('webToApi'), LB_CONCURRENCY, LB_WINDOW_MS + 10_000);
      await sleep(LB_WINDOW_MS);
      const report = await traffic.stop();
      assert.equal(report.failed, 0, report.failures.join('\n'));
      const idle = report.answers.get(hello('api-v2b')) ?? 0;
      return { answers: report.answers, idleShare: idle / Math.max(1, report.ok) };
    };
    try {
      await writeResolver('api', { DefaultSubset: 'v2', Subsets: VERSION_SUBSETS });
      await waitForOnly(V2);
      busy.delayMs = BUSY_DELAY_MS;
      const roundRobin = await measure();

      await writeResolver('api', { DefaultSubset: 'v2', Subsets: VERSION_SUBSETS, LoadBalancer: { Policy: 'least_request' } });
      // Applied once the idle instance takes the clear majority (round robin gives it about half).
      await explained(waitFor('least_request to prefer the idle instance', async () => ((await measure()).idleShare >= MIN_IDLE_SHARE ? true : undefined), 30_000, 0));
      const leastRequest = await measure();
      note(
        `api-v2a answering after ${BUSY_DELAY_MS} ms, ${LB_CONCURRENCY} loops for ${LB_WINDOW_MS} ms: round robin ${show(roundRobin.answers)} (idle share ${roundRobin.idleShare.toFixed(2)}), ` +
          `least_request ${show(leastRequest.answers)} (idle share ${leastRequest.idleShare.toFixed(2)})`,
      );
      assert.ok(leastRequest.idleShare >= MIN_IDLE_SHARE, `least_request: the idle instance answered ${show(leastRequest.answers)}`);
    } finally {
      busy.delayMs = 0;
    }
  });

  test('LoadBalancer ring_hash on a header: one x-user value always lands on the same instance, and the values spread', async () => {
    await reset();
    const users = Array.from({ length: HASH_USERS }, (_, i) => `user-${i}`);
    /** For each user, who answered its requests. */
    const placement = async (): Promise<Map<string, Set<string>>> => {
      const out = new Map<string, Set<string>>();
      for (const user of users) out.set(user, new Set((await sample(HASH_REQUESTS_PER_USER, { 'x-user': user })).keys()));
      return out;
    };
    const sticky = (p: Map<string, Set<string>>): boolean => [...p.values()].every((s) => s.size === 1 && [...s].every((b) => b.startsWith('hello from ')));
    await writeResolver('api', { LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'header', FieldValue: 'x-user' }] } });
    // Without the hash every user's requests go round robin over three instances.
    await explained(waitFor('requests with one x-user to stick to one instance', async () => (sticky(await placement()) ? true : undefined), 30_000, 100));
    const p = await placement();
    const byUser = Object.fromEntries([...p].map(([user, s]) => [user, [...s].join(',').replace(/hello from /g, '')]));
    note(`ring_hash on x-user, ${HASH_REQUESTS_PER_USER} requests per user: ${JSON.stringify(byUser)}`);
    for (const [user, answers] of p) assert.equal(answers.size, 1, `${user} was answered by ${[...answers].join(', ')}`);
    assert.ok(sticky(p), JSON.stringify(byUser));
    const used = new Set([...p.values()].flatMap((s) => [...s]));
    assert.ok(used.size > 1, `every user landed on ${[...used].join(', ')}`);
  });

  // Requests on new connections (no keep-alive): a reload, if the change needs one, closes idle
  // keep-alive connections, which costs a client an occasional request that is not the chain's doing.
  test('a resolver change under traffic: 0 failed requests, at most one reload', async () => {
    await reset();
    await writeResolver('api', { DefaultSubset: 'v1', Subsets: VERSION_SUBSETS });
    await waitForOnly(['api-v1']);
    const traffic = new Traffic(port('webToApi'), 4, 120_000, { keepAlive: false });
    try {
      await explained(waitForAnswers(traffic, ['api-v1']));
      const mark = web().logs.length;
      const changedAt = performance.now();
      await writeResolver('api', { DefaultSubset: 'v2', Subsets: VERSION_SUBSETS });
      await explained(waitForAnswers(traffic, V2));
      const switchMs = msSince(changedAt);
      const steady = traffic.report.ok + 200;
      await waitFor('traffic after the change', async () => (traffic.report.ok >= steady ? true : undefined), 20_000, 20);
      const report = await traffic.stop();
      const reloads = web()
        .logs.slice(mark)
        .filter((l) => l.msg === 'reloading haproxy');
      note(
        `resolver change v1 -> v2 under traffic: ${report.ok} requests, ${report.failed} failed; v2 served after ${switchMs} ms; ` +
          `${reloads.length} reload(s) ${JSON.stringify(reloads.map((r) => r.reasons))}, ${count(web(), 'applied runtime changes', mark)} runtime batch(es)`,
      );
      assert.equal(report.failed, 0, `failed requests: ${report.failures.join('\n')}\n${await context()}`);
      assert.ok(reloads.length <= 1, `${reloads.length} reloads: ${JSON.stringify(reloads)}`);
    } finally {
      await traffic.stop();
    }
  });

  test("an upstream removed from web's registration: its chain and target watches stop", async () => {
    await reset();
    const mark = web().logs.length;
    await writeResolver('api', { Failover: { '*': { Service: 'api-backup' } } });
    await waitForWebConfig('api-backup in web’s applied configuration', mark, (cfg) => cfg.includes(`127.0.0.1:${port('backupSidecar')}`));
    // api's chain has two targets (api, api-backup), echo's one.
    const withApi = await explained(
      waitFor(
        'the watches of both upstreams',
        async () => {
          const e = await scrapeWeb();
          return watches(e, 'chain') === 2 && watches(e, 'upstream') === 3 ? e : undefined;
        },
        30_000,
        200,
      ),
    );
    await registerMeshService(agent, { ...webSpec, upstreams: (webSpec.upstreams ?? []).filter((u) => u.destinationName !== 'api') });
    const withoutApi = await explained(
      waitFor(
        "api's chain and target watches to stop",
        async () => {
          const e = await scrapeWeb();
          return watches(e, 'chain') === 1 && watches(e, 'upstream') === 1 ? e : undefined;
        },
        30_000,
        200,
      ),
    );
    note(
      `web's watches with the api upstream: chain ${watches(withApi, 'chain')}, target ${watches(withApi, 'upstream')}; ` +
        `without it: chain ${watches(withoutApi, 'chain')}, target ${watches(withoutApi, 'upstream')}`,
    );
    // The upstream is gone from HAProxy, and the other one keeps working.
    await explained(waitFor("api's upstream listener to close", async () => ((await viaWeb({}, 2_000)).status === 0 ? true : undefined), 30_000, 200));
    assert.deepEqual(await tcpExchange(port('webToEcho'), 'still here'), { greeting: 'echo', echo: 'still here' });
    // Nothing keeps asking about api's chain or targets after that.
    const after = web().logs.length;
    await sleep(1_000);
    const stale = web()
      .logs.slice(after)
      .filter((l) => typeof l.watch === 'string' && /^(chain:.*api|target:.*\bapi(-backup)?\.)/.test(l.watch));
    assert.deepEqual(stale, [], 'log lines of stopped watches');
  });
});
