/**
 * The Consul UI's topology metrics, end to end: sidecars `web` → `api` (HTTP) and `web` → `db`
 * (TCP) run by the real daemon with a real Consul dev agent and real HAProxy, scraped every second by a real Prometheus
 * (Debian bookworm's 2.42, installed by scripts/install-prometheus.sh into .deps/prometheus). The
 * test sends known traffic web → api, then runs the Consul UI's own Prometheus metrics provider
 * — the JavaScript file Consul 1.16.2 ships (agent/uiserver/dist/assets/metrics-providers/
 * prometheus-*.js, read from the Go module cache), evaluated as the UI does, with its `fetch`
 * pointed at Prometheus' HTTP API — and checks the numbers it gets: request rates, error rate,
 * latency percentiles, the upstream and downstream series of web → api, and bytes and connections
 * of web → db.
 *
 * The UI's summary stats are `rate(...[15m])`: over a window longer than the series exist,
 * Prometheus divides the increase by the whole 15 minutes, so the expected rate is the number of
 * requests sent / 900 s. The increase is extrapolated at most by one scrape interval (1 s) at the
 * end, and not before the first sample (the counters exist, at 0, before any traffic), so the
 * bounds below are [−5 %, +10 %] of that.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runInNewContext } from 'node:vm';
import { killOnExit } from '../../devtools/children.js';
import { type RunningApp, startTcpEcho } from '../../devtools/apps.js';
import { ConsulDevAgent, REPO_ROOT, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { type SidecarProcess, note, sidecarServing, startReadySidecar } from '../../devtools/sidecar.js';
import { ADMIN_SOCKET_FILE } from '../../src/domain/haproxy-names.js';
import { RuntimeSession } from '../../src/driver/runtime-session.js';

const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? join(REPO_ROOT, '.deps/prometheus/bin/prometheus');
const CONSUL_VERSION = 'v1.16.2';
/** The UI's windows: summary stats over 15 minutes (its `[15m]`). */
const UI_WINDOW_SECONDS = 900;
const REQUESTS = 200;
/** Every ERROR_EVERY-th request gets a 503 from the api app. */
const ERROR_EVERY = 20;
const ERRORS = REQUESTS / ERROR_EVERY;
const SEND_RATE_PER_SECOND = 10;
/** The api app answers after this long: the latency histograms must see it. */
const APP_DELAY_MS = 20;
const DC = 'dc1';
/** TCP: connections web → db, each sending TCP_PAYLOAD bytes and reading the echo. */
const TCP_CONNECTIONS = 20;
const TCP_PAYLOAD = 1000;
const DB_GREETING = 'db\n';
/** OSS: every service is in the `default` namespace, which is what the UI passes and Consul's fixed tag says. */
const NS = 'default';

let agent: ConsulDevAgent;
let baseDir: string;
let apiApp: Server;
let prometheus: ChildProcess | undefined;
let promUrl: string;
const sidecars: SidecarProcess[] = [];
let dbApp: RunningApp;
let ports: Record<'api' | 'apiSidecar' | 'apiStats' | 'db' | 'dbSidecar' | 'dbStats' | 'web' | 'webSidecar' | 'webStats' | 'webToApi' | 'webToDb' | 'prometheus', number>;

interface PromAnswer {
  status: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value?: [number, string]; values?: Array<[number, string]> }> };
}

/** Every query the UI's provider sent, with Prometheus' answer. */
const asked: Array<{ path: string; query: string; answer: PromAnswer }> = [];

async function promQuery(query: string): Promise<PromAnswer> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `Prometheus answered ${res.status} to ${query}`);
  return (await res.json()) as PromAnswer;
}

interface UiProvider {
  init(options: Record<string, unknown>): void;
  serviceRecentSummaryStats(service: string, dc: string, ns: string, protocol: string, options: Record<string, unknown>): Promise<{ stats: Array<{ label: string; value: string }> }>;
  serviceRecentSummarySeries(service: string, dc: string, ns: string, protocol: string, options: Record<string, unknown>): Promise<{ data: Array<Record<string, number>> }>;
  upstreamRecentSummaryStats(service: string, dc: string, ns: string, options: Record<string, unknown>): Promise<{ stats: Record<string, Array<{ label: string; value: string }>> }>;
  downstreamRecentSummaryStats(service: string, dc: string, ns: string, options: Record<string, unknown>): Promise<{ stats: Record<string, Array<{ label: string; value: string }>> }>;
}

/** Consul's own provider file, evaluated in a sandbox that gives it `window.consul.registerMetricsProvider`. */
function loadUiProvider(): UiProvider {
  const modcache = execFileSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
  const dir = join(modcache, `github.com/hashicorp/consul@${CONSUL_VERSION}/agent/uiserver/dist/assets/metrics-providers`);
  const file = readdirSync(dir).find((f) => /^prometheus-[0-9a-f]+\.js$/.test(f));
  assert.ok(file !== undefined, `no prometheus-*.js in ${dir}`);
  let provider: UiProvider | undefined;
  const register = (name: string, p: UiProvider): void => {
    if (name === 'prometheus') provider = p;
  };
  const window = { consul: { registerMetricsProvider: register } };
  runInNewContext(readFileSync(join(dir, file), 'utf8'), { window, Date, Promise, Error, Object, Math, Number, parseFloat, encodeURIComponent, isNaN });
  assert.ok(provider !== undefined, 'the provider did not register itself');
  // What the agent's metrics proxy does: forward /api/v1/... to Prometheus.
  provider.init({
    metrics_proxy_enabled: true,
    fetch: async (path: string) => {
      const res = await fetch(`${promUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
      const body = (await res.clone().json()) as PromAnswer;
      const query = new URL(path, promUrl).searchParams.get('query') ?? '';
      asked.push({ path, query, answer: body });
      return res;
    },
  });
  return provider;
}

/** The one answer to the query that contains every fragment. */
function answerTo(...fragments: string[]): PromAnswer {
  const found = asked.filter((a) => fragments.every((f) => a.query.includes(f)));
  assert.equal(found.length, 1, `one query with ${fragments.join(' & ')}; asked: ${asked.map((a) => a.query).join('\n')}`);
  return (found[0] as (typeof asked)[number]).answer;
}

function scalar(answer: PromAnswer, labels: Record<string, string> = {}): number {
  const hit = answer.data.result.find((r) => Object.entries(labels).every(([k, v]) => r.metric[k] === v));
  assert.ok(hit?.value !== undefined, `no result with ${JSON.stringify(labels)} in ${JSON.stringify(answer.data.result)}`);
  return Number(hit.value[1]);
}

function assertRate(what: string, actual: number, count: number, unit = 'req/s'): void {
  const expected = count / UI_WINDOW_SECONDS;
  note(`${what}: ${actual.toFixed(5)} ${unit} (expected ${count}/${UI_WINDOW_SECONDS} s = ${expected.toFixed(5)})`);
  assert.ok(actual >= expected * 0.95 && actual <= expected * 1.1, `${what}: ${actual} not within [-5 %, +10 %] of ${expected}`);
}

/** One TCP connection through web's db listener: reads the greeting, sends TCP_PAYLOAD bytes, reads them back, closes. */
function tcpRoundTrip(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    const want = DB_GREETING.length + TCP_PAYLOAD;
    let got = 0;
    let sent = false;
    socket.setTimeout(5_000, () => socket.destroy(new Error('tcp round trip timed out')));
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (!sent && got >= DB_GREETING.length) {
        sent = true;
        socket.write('x'.repeat(TCP_PAYLOAD));
      }
      if (got >= want) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => (got === want ? resolve() : reject(new Error(`read ${got} of ${want} bytes`))));
  });
}

/** Whether web's HAProxy holds api's sidecar as a server in service (from `show stat` on its admin socket). */
async function webServesApi(): Promise<true | undefined> {
  const web = sidecarServing(sidecars, 'web');
  const runDir = web.find('created run directory')?.runDir;
  if (typeof runDir !== 'string') return undefined;
  const session = await RuntimeSession.open(join(runDir, ADMIN_SOCKET_FILE));
  try {
    const [header, ...rows] = (await session.send('show stat')).split('\n');
    const cols = (header ?? '').replace(/^# /, '').split(',');
    const at = (row: string[], name: string): string => row[cols.indexOf(name)] ?? '';
    const serving = rows.map((r) => r.split(',')).some((r) => at(r, 'addr') === `127.0.0.1:${ports.apiSidecar}` && !/^(MAINT|DOWN|DRAIN)/.test(at(r, 'status')));
    return serving ? true : undefined;
  } finally {
    session.close();
  }
}

before(async () => {
  // A missing Prometheus is a failure, never a skip: scripts/setup.sh installs it.
  assert.ok(existsSync(PROMETHEUS_BIN), `Prometheus is not installed at ${PROMETHEUS_BIN}: run scripts/install-prometheus.sh`);
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-ui-metrics-'));
  const names = ['api', 'apiSidecar', 'apiStats', 'db', 'dbSidecar', 'dbStats', 'web', 'webSidecar', 'webStats', 'webToApi', 'webToDb', 'prometheus'] as const;
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number])) as typeof ports;
  promUrl = `http://127.0.0.1:${ports.prometheus}`;

  // The api app: 503 on /fail, 200 otherwise, each after APP_DELAY_MS.
  apiApp = createServer((req, res) => {
    setTimeout(() => {
      if (req.url === '/fail') res.writeHead(503).end('failing on purpose');
      else res.writeHead(200, { 'content-type': 'text/plain' }).end('hello from api');
    }, APP_DELAY_MS);
  });
  await new Promise<void>((resolve) => apiApp.listen(ports.api, '127.0.0.1', resolve));
  // A TCP service: greets with `db\n`, then echoes.
  dbApp = await startTcpEcho('db', ports.db);

  // Access records feed the latency histograms: access logs on (to stdout), as proxy-defaults.
  await agent.put('/v1/config', { Kind: 'proxy-defaults', Name: 'global', AccessLogs: { Enabled: true } });
  await registerMeshService(agent, { id: 'api', name: 'api', port: ports.api, sidecarPort: ports.apiSidecar, protocol: 'http' });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web,
    sidecarPort: ports.webSidecar,
    protocol: 'http',
    upstreams: [
      { destinationName: 'api', localBindPort: ports.webToApi, protocol: 'http' },
      { destinationName: 'db', localBindPort: ports.webToDb },
    ],
  });
  await registerMeshService(agent, { id: 'db', name: 'db', port: ports.db, sidecarPort: ports.dbSidecar });
  await agent.put('/v1/config', { Kind: 'service-intentions', Name: 'db', Sources: [{ Name: 'web', Action: 'allow' }] });
  await agent.put('/v1/config', { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
  for (const id of ['api', 'web', 'db']) {
    await waitFor(
      `AccessLogs merged into ${id}-sidecar-proxy`,
      async () => {
        const svc = await agent.get<{ Proxy?: { AccessLogs?: { Enabled?: boolean } } }>(`/v1/agent/service/${id}-sidecar-proxy`);
        return svc.Proxy?.AccessLogs?.Enabled === true ? true : undefined;
      },
      30_000,
      100,
    );
  }
  await Promise.all([
    startReadySidecar(sidecars, 'api', agent.httpAddr, baseDir, ['-stats-addr', `127.0.0.1:${ports.apiStats}`]),
    startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir, ['-stats-addr', `127.0.0.1:${ports.webStats}`]),
    startReadySidecar(sidecars, 'db', agent.httpAddr, baseDir, ['-stats-addr', `127.0.0.1:${ports.dbStats}`]),
  ]);

  // Ready is not serving: web learns api's endpoint once Consul's check of api's sidecar passes
  // (up to its 10 s interval later). No warm-up request may count, so wait on web's HAProxy itself.
  await waitFor('web has an api endpoint in service', () => webServesApi(), 30_000, 250);

  const promDir = join(baseDir, 'prometheus');
  await mkdir(join(promDir, 'data'), { recursive: true });
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    '  - job_name: haproxy-connect',
    '    static_configs:',
    `      - targets: ['127.0.0.1:${ports.webStats}', '127.0.0.1:${ports.apiStats}', '127.0.0.1:${ports.dbStats}']`,
    '',
  ].join('\n');
  await writeFile(join(promDir, 'prometheus.yml'), config);
  prometheus = spawn(
    PROMETHEUS_BIN,
    [`--config.file=${join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(promDir, 'data')}`, `--web.listen-address=127.0.0.1:${ports.prometheus}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  killOnExit(prometheus);
  let promStderr = '';
  prometheus.stderr?.on('data', (d: Buffer) => {
    promStderr = (promStderr + d.toString()).slice(-5_000);
  });
  await waitFor(`Prometheus ready (stderr: ${promStderr})`, async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined), 30_000, 200);
  // Both sidecars scraped, and the counters sampled at 0 before any traffic.
  await waitFor(
    'the three sidecars up in Prometheus with their Envoy-compatible series',
    async () => {
      const up = await promQuery('sum(up{job="haproxy-connect"})');
      const http = await promQuery('count(envoy_http_downstream_rq_completed)');
      const tcp = await promQuery('count(envoy_tcp_downstream_cx_rx_bytes_total)');
      return Number(up.data.result[0]?.value?.[1]) === 3 && Number(http.data.result[0]?.value?.[1]) >= 3 && Number(tcp.data.result[0]?.value?.[1]) >= 2 ? true : undefined;
    },
    30_000,
    250,
  );
});

after(async () => {
  if (prometheus !== undefined && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await Promise.all(sidecars.map((s) => s.stop()));
  await dbApp?.close();
  await new Promise((resolve) => apiApp?.close(resolve));
  apiApp?.closeAllConnections();
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe("the Consul UI's Prometheus queries against real sidecars", () => {
  test(`${REQUESTS} requests web → api (${ERRORS} of them 503) show up in the UI's request rate, error rate, latency and topology series`, async () => {
    const statuses = new Map<number, number>();
    const startedAt = Date.now();
    for (let i = 1; i <= REQUESTS; i++) {
      const path = i % ERROR_EVERY === 0 ? '/fail' : '/ok';
      const res = await fetch(`http://127.0.0.1:${ports.webToApi}${path}`, { signal: AbortSignal.timeout(5_000) });
      await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      // Paced: request i leaves no earlier than i / SEND_RATE_PER_SECOND seconds after the start.
      const wait = startedAt + (i * 1000) / SEND_RATE_PER_SECOND - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    const sendSeconds = (Date.now() - startedAt) / 1000;
    note(`sent ${REQUESTS} requests in ${sendSeconds.toFixed(1)} s: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.deepEqual(Object.fromEntries(statuses), { 200: REQUESTS - ERRORS, 503: ERRORS });

    for (let i = 0; i < TCP_CONNECTIONS; i++) await tcpRoundTrip(ports.webToDb);
    const tcpIn = TCP_CONNECTIONS * TCP_PAYLOAD;
    const tcpOut = TCP_CONNECTIONS * (DB_GREETING.length + TCP_PAYLOAD);
    note(`TCP web → db: ${TCP_CONNECTIONS} connections, ${tcpIn} bytes to db, ${tcpOut} bytes back`);

    // Wait until Prometheus holds the final counts (a scrape after the last request).
    await waitFor(
      'the TCP bytes scraped',
      async () => {
        // On both sides: db's public listener, web's upstream listener and web's cluster (scraped at their own moments).
        const a = await promQuery(`sum(envoy_tcp_downstream_cx_rx_bytes_total{consul_source_service="db",envoy_tcp_prefix="public_listener"})`);
        const b = await promQuery(`sum(envoy_tcp_downstream_cx_rx_bytes_total{consul_source_service="web",consul_upstream_service="db"})`);
        const c = await promQuery(`sum(envoy_cluster_upstream_cx_tx_bytes_total{consul_source_service="web",consul_destination_service="db"})`);
        return [a, b, c].every((x) => Number(x.data.result[0]?.value?.[1]) === tcpIn) ? true : undefined;
      },
      20_000,
      250,
    );
    await waitFor(
      'the last requests scraped',
      async () => {
        const a = await promQuery(`sum(envoy_http_downstream_rq_completed{consul_source_service="api",envoy_http_conn_manager_prefix="public_listener"})`);
        return Number(a.data.result[0]?.value?.[1]) === REQUESTS ? true : undefined;
      },
      20_000,
      250,
    );
    // And the histograms of both sides.
    await waitFor(
      'the latency histograms scraped',
      async () => {
        const a = await promQuery('sum(envoy_cluster_upstream_rq_time_count{consul_destination_service="api"})');
        const b = await promQuery('sum(envoy_http_downstream_rq_time_count{consul_source_service="api",envoy_http_conn_manager_prefix="public_listener"})');
        return Number(a.data.result[0]?.value?.[1]) === REQUESTS && Number(b.data.result[0]?.value?.[1]) === REQUESTS ? true : undefined;
      },
      20_000,
      250,
    );

    const ui = loadUiProvider();

    // --- api's own summary (the service's box in the topology view) ---------------------------
    const service = await ui.serviceRecentSummaryStats('api', DC, NS, 'http', {});
    note(`UI service stats for api: ${JSON.stringify(service.stats.map((s) => [s.label, s.value]))}`);
    // (Array.from: the provider's arrays come from the sandbox's realm.)
    assert.deepEqual(
      Array.from(service.stats, (s) => s.label),
      ['RPS', 'ER', 'P50', 'P99'],
    );
    const sourceApi = 'consul_source_service="api"';
    assertRate('api RPS (inbound, public_listener)', scalar(answerTo('envoy_http_downstream_rq_completed', sourceApi)), REQUESTS);
    const er = scalar(answerTo('envoy_http_downstream_rq_xx', sourceApi, 'envoy_response_code_class="5"'));
    note(`api ER: ${er.toFixed(4)} (sent ${ERRORS}/${REQUESTS} = ${(ERRORS / REQUESTS).toFixed(4)})`);
    assert.ok(Math.abs(er - ERRORS / REQUESTS) < 0.005, `error ratio ${er} is not ${ERRORS / REQUESTS}`);
    const p50 = scalar(answerTo('histogram_quantile(0.5', 'envoy_http_downstream_rq_time_bucket', sourceApi));
    const p99 = scalar(answerTo('histogram_quantile(0.99', 'envoy_http_downstream_rq_time_bucket', sourceApi));
    note(`api P50 ${p50.toFixed(1)} ms, P99 ${p99.toFixed(1)} ms (the app answers after ${APP_DELAY_MS} ms)`);
    assert.ok(p50 >= 10 && p50 <= 50, `P50 ${p50} ms is not in the bucket range around the app's ${APP_DELAY_MS} ms`);
    assert.ok(p99 >= p50, `P99 ${p99} < P50 ${p50}`);

    // --- api's request series (the chart of the service's metrics) ----------------------------
    const series = await ui.serviceRecentSummarySeries('api', DC, NS, 'http', {});
    const successes = series.data.map((point) => point.Successes ?? 0);
    const peak = Math.max(...successes);
    note(`api series: ${series.data.length} points, peak Successes ${peak.toFixed(2)} rps (sent at ${SEND_RATE_PER_SECOND} rps)`);
    assert.ok(series.data.length > 0, 'the series query returned no points');
    assert.ok(peak >= SEND_RATE_PER_SECOND * 0.5 && peak <= SEND_RATE_PER_SECOND * 2, `peak irate ${peak} is far from the send rate ${SEND_RATE_PER_SECOND}`);

    // --- web's upstreams (web → api, grouped by upstream) ------------------------------------
    const upstreams = await ui.upstreamRecentSummaryStats('web', DC, NS, {});
    note(`UI upstream stats for web: ${JSON.stringify(upstreams.stats)}`);
    const upstreamKey = `api.${NS}.${DC}`;
    assert.ok(upstreamKey in upstreams.stats, `no upstream ${upstreamKey} for web: ${Object.keys(upstreams.stats).join(', ')}`);
    const byUpstream = { consul_upstream_service: 'api', consul_upstream_datacenter: DC, consul_upstream_namespace: NS };
    assertRate(
      'web → api RPS (upstream listener)',
      scalar(answerTo('envoy_http_downstream_rq_completed', 'consul_source_service="web"', 'envoy_http_conn_manager_prefix="upstream"'), byUpstream),
      REQUESTS,
    );
    const upEr = scalar(answerTo('envoy_http_downstream_rq_xx', 'consul_source_service="web"', 'envoy_http_conn_manager_prefix="upstream"'), byUpstream);
    assert.ok(Math.abs(upEr - ERRORS / REQUESTS) < 0.005, `web → api error ratio ${upEr}`);
    const upP50 = scalar(answerTo('histogram_quantile(0.5', 'consul_source_service="web"', 'envoy_http_conn_manager_prefix="upstream"'), byUpstream);
    note(`web → api P50 ${upP50.toFixed(1)} ms`);
    assert.ok(upP50 >= 10 && upP50 <= 50, `web → api P50 ${upP50} ms`);

    // --- api's downstreams (who calls api, from the callers' cluster stats) ------------------
    const downstreams = await ui.downstreamRecentSummaryStats('api', DC, NS, {});
    note(`UI downstream stats for api: ${JSON.stringify(downstreams.stats)}`);
    const downstreamKey = `web.${NS}.${DC}`;
    assert.ok(downstreamKey in downstreams.stats, `no downstream ${downstreamKey} for api: ${Object.keys(downstreams.stats).join(', ')}`);
    const bySource = { consul_source_service: 'web', consul_source_datacenter: DC, consul_source_namespace: NS };
    assertRate('web → api RPS (web cluster api)', scalar(answerTo('envoy_cluster_upstream_rq_completed', 'consul_destination_service="api"'), bySource), REQUESTS);
    const downEr = scalar(answerTo('envoy_cluster_upstream_rq_xx', 'consul_destination_service="api"'), bySource);
    assert.ok(Math.abs(downEr - ERRORS / REQUESTS) < 0.005, `downstream error ratio ${downEr}`);
    assert.ok(scalar(answerTo('envoy_cluster_upstream_cx_total', 'consul_destination_service="api"'), bySource) > 0, 'no connection rate from web to api');
    assert.ok(scalar(answerTo('envoy_cluster_upstream_cx_rx_bytes_total', 'consul_destination_service="api"'), bySource) > 0, 'no bytes received by web from api');
    assert.ok(scalar(answerTo('envoy_cluster_upstream_cx_tx_bytes_total', 'consul_destination_service="api"'), bySource) > 0, 'no bytes sent by web to api');
    // --- db, a TCP service: bytes and connections, on its own box and as web's upstream --------
    const db = await ui.serviceRecentSummaryStats('db', DC, NS, 'tcp', {});
    note(`UI service stats for db: ${JSON.stringify(db.stats.map((s) => [s.label, s.value]))}`);
    const sourceDb = 'consul_source_service="db"';
    assertRate('db RX (public_listener)', scalar(answerTo('envoy_tcp_downstream_cx_rx_bytes_total', sourceDb)), 8 * tcpIn, 'bit/s');
    assertRate('db TX (public_listener)', scalar(answerTo('envoy_tcp_downstream_cx_tx_bytes_total', sourceDb)), 8 * tcpOut, 'bit/s');
    // Consul's TCP check connects to the public listener every second too: at least our connections.
    const dbCr = scalar(answerTo('envoy_tcp_downstream_cx_total', sourceDb));
    note(`db CR ${dbCr.toFixed(4)} conn/s (${TCP_CONNECTIONS} of ours, plus Consul's TCP check every second)`);
    assert.ok(dbCr >= (TCP_CONNECTIONS / UI_WINDOW_SECONDS) * 0.95, `db CR ${dbCr}`);
    // The series are a range query whose points fall on the UI's step: right after the traffic the
    // last point can precede the scrape that saw it (all points 0, once on HAProxy 3.0 in CI). Ask
    // again until a point shows it (bounded), keeping only the last attempt's queries.
    const mark = asked.length;
    let lastSeries: unknown;
    await waitFor(
      'an inbound data rate for db in the UI series',
      async () => {
        asked.length = mark;
        const dataRate = await ui.serviceRecentSummarySeries('db', DC, NS, 'tcp', {});
        lastSeries = dataRate.data;
        return dataRate.data.some((point) => (point.Inbound ?? 0) > 0) ? true : undefined;
      },
      30_000,
      1_000,
    ).catch((err: unknown) => assert.fail(`no inbound data rate for db: ${JSON.stringify(lastSeries)} (${String(err)})`));
    assert.ok(`db.${NS}.${DC}` in upstreams.stats, `no upstream db for web: ${Object.keys(upstreams.stats).join(', ')}`);
    const byDb = { consul_upstream_service: 'db', consul_upstream_datacenter: DC, consul_upstream_namespace: NS };
    assertRate(
      'web → db RX (upstream listener)',
      scalar(answerTo('envoy_tcp_downstream_cx_rx_bytes_total', 'consul_source_service="web"', 'envoy_tcp_prefix=~"upstream.*"'), byDb),
      8 * tcpIn,
      'bit/s',
    );
    assertRate('web → db CR (upstream listener)', scalar(answerTo('envoy_tcp_downstream_cx_total', 'consul_source_service="web"', 'envoy_tcp_prefix=~"upstream.*"'), byDb), TCP_CONNECTIONS, 'conn/s');
    const dbDownstreams = await ui.downstreamRecentSummaryStats('db', DC, NS, {});
    assert.ok(`web.${NS}.${DC}` in dbDownstreams.stats, `no downstream web for db: ${Object.keys(dbDownstreams.stats).join(', ')}`);
    assertRate('web → db TX (web cluster db)', scalar(answerTo('envoy_cluster_upstream_cx_tx_bytes_total', 'consul_destination_service="db"'), bySource), 8 * tcpIn, 'bit/s');

    // The size of the addition, on web's /metrics (one upstream, both histograms per side).
    const body = await (await fetch(`http://127.0.0.1:${ports.webStats}/metrics`)).text();
    const lines = body.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    note(`web /metrics: ${lines.length} samples, ${lines.filter((l) => l.startsWith('envoy_')).length} of them Envoy-compatible`);
    const downP99 = scalar(answerTo('histogram_quantile(0.99', 'envoy_cluster_upstream_rq_time_bucket', 'consul_destination_service="api"'), bySource);
    note(`web → api P99 (cluster) ${downP99.toFixed(1)} ms`);
    assert.ok(downP99 >= 10, `cluster P99 ${downP99} ms is below the app's delay`);
  });
});
