/** Summaries of the runs and the Markdown table the README quotes. Pure. */
import type { ControlPlaneResult, DataplaneApiRss, Driver } from './control-plane/case.js';
import type { DataPlaneRun, Workload } from './data-plane.js';
import type { Environment } from './lib/versions.js';
import type { Profile } from './profile.js';
import type { PathUnderTest } from './testbed.js';

export interface PathSummary {
  path: string;
  description: string;
  keepAliveRps: number[];
  connectionCloseRps: number[];
  p50Us: number[];
  p99Us: number[];
  p999Us: number[];
  /** Fixed rate with a new connection per request. */
  newConnectionP50Us: number[];
  newConnectionP99Us: number[];
  /** Mean CPU µs per request by component role. */
  cpuUsPerRequest: Record<string, number>;
  /** RSS in KiB by component role and command (last fixed-rate run). */
  rssKiB: Record<string, Record<string, number>>;
  errors: number;
  requests: number;
}

export interface Results {
  startedAt: string;
  finishedAt: string;
  profile: Profile;
  environment: Environment;
  machine: { loadAverageAtStart: number; loadAverageAtEnd: number; busyNote: string; pinning: string; daemonFrom: string };
  paths: PathSummary[];
  dataPlaneRuns: DataPlaneRun[];
  controlPlane: ControlPlaneResult[];
  /** The drivers the control-plane cases ran with (absent in results older than the dataplane runs: native only). */
  drivers?: readonly Driver[];
  /** Control-plane cases that threw, with the start of their error. */
  failedCases?: Array<{ case: string; error: string }>;
}

const mean = (xs: readonly number[]): number => (xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length);

export function summarizePaths(paths: readonly PathUnderTest[], runs: readonly DataPlaneRun[]): PathSummary[] {
  return paths.map((path) => {
    const of = (w: Workload): DataPlaneRun[] => runs.filter((r) => r.path === path.name && r.workload === w);
    const fixed = of('fixed-rate');
    const roles = [...new Set(fixed.flatMap((r) => r.cpu?.map((c) => c.role) ?? []))];
    const cpuUsPerRequest = Object.fromEntries(roles.map((role) => [role, mean(fixed.flatMap((r) => r.cpu?.filter((c) => c.role === role).map((c) => c.usPerRequest) ?? []))]));
    const rssKiB: Record<string, Record<string, number>> = {};
    for (const m of fixed.at(-1)?.memory ?? []) {
      const byCommand: Record<string, number> = {};
      for (const p of m.processes) byCommand[p.command] = (byCommand[p.command] ?? 0) + p.rssKiB;
      rssKiB[m.role] = byCommand;
    }
    const all = runs.filter((r) => r.path === path.name);
    const errors = all.reduce((sum, r) => sum + (r.saturation === undefined ? 0 : r.saturation.socketErrors + r.saturation.non2xx) + (r.fixedRate?.errors ?? 0), 0);
    const requests = all.reduce((sum, r) => sum + (r.saturation?.requests ?? 0) + (r.fixedRate?.requests ?? 0), 0);
    return {
      path: path.name,
      description: path.description,
      keepAliveRps: of('keep-alive').map((r) => r.saturation?.requestsPerSecond ?? Number.NaN),
      connectionCloseRps: of('connection-close').map((r) => r.saturation?.requestsPerSecond ?? Number.NaN),
      p50Us: fixed.map((r) => r.fixedRate?.p50Us ?? Number.NaN),
      p99Us: fixed.map((r) => r.fixedRate?.p99Us ?? Number.NaN),
      p999Us: fixed.map((r) => r.fixedRate?.p999Us ?? Number.NaN),
      newConnectionP50Us: of('new-connection').map((r) => r.fixedRate?.p50Us ?? Number.NaN),
      newConnectionP99Us: of('new-connection').map((r) => r.fixedRate?.p99Us ?? Number.NaN),
      cpuUsPerRequest,
      rssKiB,
      errors,
      requests,
    };
  });
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const one = (n: number | undefined): string => (n !== undefined && Number.isFinite(n) ? n.toFixed(1) : '–');
/** Mean, with the spread of the rounds when there are several. */
const withSpread = (xs: readonly number[]): string => (xs.length > 1 ? `${int(mean(xs))} (${xs.map(int).join('/')})` : int(mean(xs)));
const mib = (kib: number): string => (kib / 1024).toFixed(1);

/** Failed / sent probe requests; `n/a` for a case that runs no probe (nothing was sent). */
export function probeCell(failed: number, sent: number): string {
  return sent === 0 && failed === 0 ? 'n/a' : `${int(failed)} / ${int(sent)}`;
}

function rssCell(byCommand: Record<string, number> | undefined): string {
  if (byCommand === undefined) return '–';
  return Object.entries(byCommand)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([cmd, kib]) => `${cmd} ${mib(kib)}`)
    .join(' + ');
}

export function renderMarkdown(results: Results): string {
  const { profile, environment: env, machine } = results;
  const lines = [
    `## Benchmark (${profile.name} profile, ${results.startedAt})`,
    '',
    `HAProxy ${env.haproxy.replace(/^HAProxy version /, '')}; ${env.openssl}; Node ${env.node}; ${env.consul}; haproxy-connect ${env.haproxyConnect} (${machine.daemonFrom}); ` +
      `${env.wrk.split(' [')[0]}; fortio ${env.fortio}; Linux ${env.kernel}; ${env.cpuCount} × ${env.cpuModel}.`,
    `Pinning: ${machine.pinning}. Load average ${machine.loadAverageAtStart.toFixed(2)} at start, ${machine.loadAverageAtEnd.toFixed(2)} at end. ${machine.busyNote}`,
    `Each run: ${profile.warmupS} s warm-up (dropped) + ${profile.durationS} s measured; ${profile.rounds === 2 ? 'paths in A B B A order, two rounds (mean, then each round)' : 'one round'}. ` +
      `Saturation: wrk, 1 thread, ${profile.wrkConnections} connections. Latency and CPU: fortio, open loop at ${int(profile.fixedRateQps)} req/s over ${profile.fixedRateConnections} keep-alive connections; ` +
      `the direct row is the generator's own floor. New connection: fortio at ${int(profile.newConnectionQps)} req/s, a new connection per request. ` +
      'CPU = on-CPU time (schedstat, all threads, daemon + HAProxy master and worker) per request; the destination daemon column is the haproxy-connect process alone (its SPOE agent), part of the destination sidecar. ' +
      "RSS is summed per command over a component's processes (HAProxy master + worker; shared pages count twice).",
    '',
    '| path | keep-alive req/s | `Connection: close` req/s | p50 µs | p99 µs | p99.9 µs | new connection p50 µs | new connection p99 µs | CPU µs/req source sidecar | CPU µs/req destination sidecar | CPU µs/req destination daemon | CPU µs/req app | RSS MiB source sidecar | RSS MiB destination sidecar | errors / requests |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const p of results.paths) {
    lines.push(
      `| ${p.path} | ${withSpread(p.keepAliveRps)} | ${withSpread(p.connectionCloseRps)} | ${int(mean(p.p50Us))} | ${int(mean(p.p99Us))} | ${int(mean(p.p999Us))} | ${int(mean(p.newConnectionP50Us))} | ${int(mean(p.newConnectionP99Us))} | ` +
        `${one(p.cpuUsPerRequest['source sidecar'])} | ${one(p.cpuUsPerRequest['destination sidecar'])} | ${one(p.cpuUsPerRequest['destination daemon'])} | ${one(p.cpuUsPerRequest.app)} | ` +
        `${rssCell(p.rssKiB['source sidecar'])} | ${rssCell(p.rssKiB['destination sidecar'])} | ${int(p.errors)} / ${int(p.requests)} |`,
    );
  }
  lines.push('', `Paths: ${results.paths.map((p) => `**${p.path}** ${p.description}`).join('; ')}.`, '');
  const routing = routingCostLine(results.paths);
  if (routing !== undefined) lines.push(routing, '');
  const l7 = l7CostLine(results.paths);
  if (l7 !== undefined) lines.push(l7, '');
  if (results.controlPlane.length > 0) lines.push(...controlPlaneTable(results.controlPlane), '');
  if (results.controlPlane.length > 0 && results.drivers !== undefined && !results.drivers.includes('dataplane')) {
    lines.push('Control-plane cases ran with the native driver only: set DATAPLANEAPI_BIN to a Data Plane API binary to run them with the Data Plane API driver (`-dataplane`) too.', '');
  }
  for (const f of results.failedCases ?? []) lines.push(`Control-plane case **${f.case}** failed: ${f.error.replaceAll('\n', ' ').replaceAll('|', '\\|')}`, '');
  return lines.join('\n');
}

const driverOf = (c: ControlPlaneResult): Driver => c.driver ?? 'native';

/** RSS of a dataplane run's Data Plane APIs: the mean of each sidecar's peak, then the highest. */
export function dataplaneRssCell(rss: DataplaneApiRss | undefined): string {
  return rss === undefined ? '–' : `${one(rss.meanPeakMiB)} (max ${one(rss.maxMiB)}, ${rss.sidecars} sidecar${rss.sidecars === 1 ? '' : 's'})`;
}

/**
 * The control-plane table. With native results only it is the table it always was; with dataplane
 * results too, each result's rows sit together (native first) with a driver column and the RSS of
 * the Data Plane API processes. Pure.
 */
export function controlPlaneTable(results: readonly ControlPlaneResult[]): string[] {
  const reloadsCell = (c: ControlPlaneResult): string => (c.reloads === undefined ? '–' : int(c.reloads));
  const figures = (c: ControlPlaneResult): string => `${c.samplesMs.length} | ${one(c.p50Ms)} | ${one(c.p99Ms)} | ${one(c.maxMs)} | ${probeCell(c.failedRequests, c.requests)} | ${reloadsCell(c)}`;
  if (!results.some((c) => driverOf(c) === 'dataplane')) {
    return [
      '| control-plane case | repeats | p50 ms | p99 ms | max ms | failed probe requests | reloads |',
      '|---|---|---|---|---|---|---|',
      ...results.map((c) => `| ${c.case}: ${c.description} | ${figures(c)} |`),
    ];
  }
  const names = [...new Set(results.map((c) => c.case))];
  const order: readonly Driver[] = ['native', 'dataplane'];
  const rows = names.flatMap((name) => results.filter((c) => c.case === name).sort((a, b) => order.indexOf(driverOf(a)) - order.indexOf(driverOf(b))));
  return [
    '| control-plane case | driver | repeats | p50 ms | p99 ms | max ms | failed probe requests | reloads | Data Plane API RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((c) => `| ${c.case}: ${c.description} | ${driverOf(c)} | ${figures(c)} | ${dataplaneRssCell(c.dataplaneApiRss)} |`),
  ];
}

/** CPU per request of both sidecars together, and p99, of a path (means over the rounds). */
function costOf(p: PathSummary): { cpu: number; p99: number } {
  return { cpu: (p.cpuUsPerRequest['source sidecar'] ?? Number.NaN) + (p.cpuUsPerRequest['destination sidecar'] ?? Number.NaN), p99: mean(p.p99Us) };
}

/**
 * What the service-router costs, from the same run: hc-http-routed next to hc-http and the
 * hand-written reference (sidecars' CPU µs per request, p99 µs). Undefined without those paths. Pure.
 */
export function routingCostLine(paths: readonly PathSummary[]): string | undefined {
  const find = (name: string): PathSummary | undefined => paths.find((p) => p.path === name);
  const routed = find('hc-http-routed');
  const plain = find('hc-http');
  // Absent too when no fixed-rate run measured them (a run of control-plane cases only).
  if (routed === undefined || plain === undefined || routed.p99Us.length === 0 || plain.p99Us.length === 0) return undefined;
  const r = costOf(routed);
  const h = costOf(plain);
  const signed = (n: number): string => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${n.toFixed(1)}` : '–');
  const sourceDelta = (routed.cpuUsPerRequest['source sidecar'] ?? Number.NaN) - (plain.cpuUsPerRequest['source sidecar'] ?? Number.NaN);
  const reference = find('reference-http');
  const ref = reference === undefined ? '' : `; reference-http ${one(costOf(reference).cpu)} µs/req, p99 ${int(costOf(reference).p99)} µs`;
  return (
    `Routing: sidecars' CPU per request (source + destination) hc-http-routed ${one(r.cpu)} µs, hc-http ${one(h.cpu)} µs (${signed(r.cpu - h.cpu)}; source sidecar ${signed(sourceDelta)}); ` +
    `p99 ${int(r.p99)} µs vs ${int(h.p99)} µs${ref}.`
  );
}

/**
 * What L7 intentions cost, from the same run: hc-http-l7 (rendered ACL chain) and hc-http-l7-agent
 * (the agent decides every request) next to hc-http (no intentions beyond the default allow) and
 * the hand-written reference: sidecars' CPU µs per request (source + destination, and the
 * destination daemon alone), p50/p99 at the fixed rate, keep-alive req/s. Undefined without the
 * L7 paths and hc-http, or when no fixed-rate run measured them. Pure.
 */
export function l7CostLine(paths: readonly PathSummary[]): string | undefined {
  const find = (name: string): PathSummary | undefined => paths.find((p) => p.path === name && p.p99Us.length > 0);
  const plain = find('hc-http');
  const l7 = ['hc-http-l7', 'hc-http-l7-agent'].map(find).filter((p): p is PathSummary => p !== undefined);
  if (plain === undefined || l7.length === 0) return undefined;
  const signed = (n: number): string => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${n.toFixed(1)}` : '–');
  const base = costOf(plain);
  const daemon = (p: PathSummary): number => p.cpuUsPerRequest['destination daemon'] ?? Number.NaN;
  const figures = (p: PathSummary): string => {
    const c = costOf(p);
    return `${p.path} ${one(c.cpu)} µs/req (destination daemon ${one(daemon(p))}), p50 ${int(mean(p.p50Us))} µs, p99 ${int(c.p99)} µs, keep-alive ${int(mean(p.keepAliveRps))} req/s`;
  };
  const deltas = l7.map((p) => `${p.path} ${signed(costOf(p).cpu - base.cpu)} µs/req (destination daemon ${signed(daemon(p) - daemon(plain))})`).join(', ');
  const reference = paths.find((p) => p.path === 'reference-http' && p.p99Us.length > 0);
  const ref =
    reference === undefined
      ? ''
      : `; reference-http ${one(costOf(reference).cpu)} µs/req, p50 ${int(mean(reference.p50Us))} µs, p99 ${int(costOf(reference).p99)} µs, keep-alive ${int(mean(reference.keepAliveRps))} req/s`;
  return `L7 intentions: sidecars' CPU per request (source + destination) ${[...l7, plain].map(figures).join('; ')}${ref}. Over hc-http: ${deltas}.`;
}

/** Problems that make a run invalid: a case that did not run, or too many errors. Pure. */
export function findProblems(results: Results, expectedRuns: number, expectedCases: ReadonlyArray<{ name: string; samples: number; driver?: Driver }>, maxErrorRatio: number): string[] {
  const problems: string[] = [];
  if (results.dataPlaneRuns.length !== expectedRuns) problems.push(`expected ${expectedRuns} data-plane runs, got ${results.dataPlaneRuns.length}`);
  for (const r of results.dataPlaneRuns) {
    const requests = r.saturation?.requests ?? r.fixedRate?.requests ?? 0;
    if (requests === 0) problems.push(`${r.path} ${r.workload} round ${r.round}: no request completed`);
  }
  for (const p of results.paths) {
    if (p.requests > 0 && p.errors / p.requests > maxErrorRatio) problems.push(`${p.path}: ${p.errors} errors in ${p.requests} requests`);
  }
  for (const { name, samples, driver = 'native' } of expectedCases) {
    const label = driver === 'native' ? name : `${name} (${driver} driver)`;
    const c = results.controlPlane.find((x) => x.case === name && driverOf(x) === driver);
    if (c === undefined) problems.push(`control-plane case ${label} did not run`);
    else if (c.samplesMs.length !== samples) problems.push(`control-plane case ${label}: ${c.samplesMs.length} of ${samples} repetitions`);
  }
  return problems;
}
