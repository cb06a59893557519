/** Summaries of the runs and the Markdown tables the README quotes. Pure. */
import type { ControlPlaneResult, DataplaneApiRss, Driver } from './control-plane/case.js';
import type { DataPlaneRun } from './data-plane.js';
import type { FixedRateResult } from './lib/load-tools.js';
import { BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrapRatio, median, spreadOf, withinVerdict } from './lib/stats.js';
import type { Environment } from './lib/versions.js';
import { type PlannedRun, type Profile, WORKLOADS, type Workload } from './profile.js';
import type { PathUnderTest } from './testbed.js';

/** A path's figures, each a list with one value per round in the order measured (the tables show median [min–max]). */
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
  /** CPU µs per request by component role, one value per fixed-rate round. */
  cpuUsPerRequest: Record<string, number[]>;
  /** CPU µs per new connection (one request each) by component role, one value per new-connection round (absent in older results). */
  newConnectionCpuUs?: Record<string, number[]>;
  /** The tail workload's long runs (none outside the full profile's TAIL_PATHS). */
  tail: FixedRateResult[];
  /** RSS in KiB by component role and command (last fixed-rate run). */
  rssKiB: Record<string, Record<string, number>>;
  errors: number;
  requests: number;
}

/** Where a run's time went (bench/run.ts measures it; the budget is in profile.ts). */
export interface Timings {
  testbedS: number;
  dataPlaneS: number;
  controlPlane: Array<{ case: string; driver: Driver; seconds: number }>;
  totalS: number;
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
  timings?: Timings;
}

/** CPU µs per request by component role over `runs`, one value per run (NaN where a run has none). */
function cpuByRole(runs: readonly DataPlaneRun[]): Record<string, number[]> {
  const roles = [...new Set(runs.flatMap((r) => r.cpu?.map((c) => c.role) ?? []))];
  return Object.fromEntries(roles.map((role) => [role, runs.map((r) => r.cpu?.find((c) => c.role === role)?.usPerRequest ?? Number.NaN)]));
}

export function summarizePaths(paths: readonly PathUnderTest[], runs: readonly DataPlaneRun[]): PathSummary[] {
  return paths.map((path) => {
    const of = (w: Workload): DataPlaneRun[] => runs.filter((r) => r.path === path.name && r.workload === w);
    const fixed = of('fixed-rate');
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
      cpuUsPerRequest: cpuByRole(fixed),
      newConnectionCpuUs: cpuByRole(of('new-connection')),
      tail: of('tail').flatMap((r) => (r.fixedRate === undefined ? [] : [r.fixedRate])),
      rssKiB,
      errors,
      requests,
    };
  });
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const one = (n: number | undefined): string => (n !== undefined && Number.isFinite(n) ? n.toFixed(1) : '–');
const signed = (n: number): string => (Number.isFinite(n) ? `${n >= 0 ? '+' : ''}${n.toFixed(1)}` : '–');
const mib = (kib: number): string => (kib / 1024).toFixed(1);

/**
 * A figure over the rounds: `1,067 [900–1,200]`, the median with the range of the rounds; the value
 * alone for one round (or a range that rounds to nothing), – for none. Pure.
 */
export function spreadCell(rounds: readonly number[], format: (n: number) => string = int): string {
  const s = spreadOf(rounds);
  if (s.count === 0) return '–';
  if (s.count === 1 || format(s.min) === format(s.max)) return format(s.median);
  return `${format(s.median)} [${format(s.min)}–${format(s.max)}]`;
}

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

const WORKLOAD_LABELS: Record<Workload, string> = {
  'keep-alive': 'keep-alive',
  'connection-close': '`Connection: close`',
  'fixed-rate': 'fixed rate',
  'new-connection': 'new connection',
  tail: 'tail',
};

/** The profile's plan in words: each workload's measured length, and its rounds over which paths. Pure. */
export function describePlan(profile: Pick<Profile, 'warmupS' | 'durationS' | 'plan'>): string {
  const workloads = WORKLOADS.flatMap((w) => {
    const entries = profile.plan.filter((e) => e.workload === w && e.rounds > 0);
    if (entries.length === 0) return [];
    const named = entries.some((e) => e.paths !== undefined);
    const rounds = entries.map((e) => `${e.rounds} round${e.rounds === 1 ? '' : 's'} of ${e.paths === undefined ? (named ? 'the other paths' : 'every path') : e.paths.join(', ')}`);
    return [`${WORKLOAD_LABELS[w]} ${profile.durationS[w]} s, ${rounds.join(' and ')}`];
  });
  return (
    `Each run: ${profile.warmupS} s warm-up (dropped), then measured: ${workloads.join('; ')}. ` +
    'Round r runs its paths in order for odd r and reversed for even (A B … / … B A); a figure is the median of its rounds with their range [min–max].'
  );
}

export function renderMarkdown(results: Results): string {
  const { profile, environment: env, machine } = results;
  const lines = [
    `## Benchmark (${profile.name} profile, ${results.startedAt})`,
    '',
    `HAProxy ${env.haproxy.replace(/^HAProxy version /, '')}; ${env.openssl}; Node ${env.node}; ${env.consul}; haproxy-connect ${env.haproxyConnect} (${machine.daemonFrom}); ` +
      `${env.wrk.split(' [')[0]}; fortio ${env.fortio}; Linux ${env.kernel}; ${env.cpuCount} × ${env.cpuModel}.`,
    `Pinning: ${machine.pinning}. Load average ${machine.loadAverageAtStart.toFixed(2)} at start, ${machine.loadAverageAtEnd.toFixed(2)} at end. ${machine.busyNote}`,
    `${describePlan(profile)} ` +
      `Saturation: wrk, 1 thread, ${profile.wrkConnections} connections. Latency and CPU: fortio, open loop at ${int(profile.fixedRateQps)} req/s over ${profile.fixedRateConnections} keep-alive connections; ` +
      `the direct row is the generator's own floor. New connection: fortio at ${int(profile.newConnectionQps)} req/s, a new connection per request. ` +
      'CPU = on-CPU time (schedstat, all threads, daemon + HAProxy master and worker) per request; the destination daemon column is the haproxy-connect process alone (its SPOE agent), part of the destination sidecar. ' +
      "RSS is summed per command over a component's processes (HAProxy master + worker; shared pages count twice).",
    '',
    '| path | keep-alive req/s | `Connection: close` req/s | p50 µs | p99 µs | p99.9 µs | new connection p50 µs | new connection p99 µs | CPU µs/req source sidecar | CPU µs/req destination sidecar | CPU µs/req destination daemon | CPU µs/req app | RSS MiB source sidecar | RSS MiB destination sidecar | errors / requests |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const cpu = (p: PathSummary, role: string): string => spreadCell(p.cpuUsPerRequest[role] ?? [], one);
  for (const p of results.paths) {
    lines.push(
      `| ${p.path} | ${spreadCell(p.keepAliveRps)} | ${spreadCell(p.connectionCloseRps)} | ${spreadCell(p.p50Us)} | ${spreadCell(p.p99Us)} | ${spreadCell(p.p999Us)} | ${spreadCell(p.newConnectionP50Us)} | ${spreadCell(p.newConnectionP99Us)} | ` +
        `${cpu(p, 'source sidecar')} | ${cpu(p, 'destination sidecar')} | ${cpu(p, 'destination daemon')} | ${cpu(p, 'app')} | ` +
        `${rssCell(p.rssKiB['source sidecar'])} | ${rssCell(p.rssKiB['destination sidecar'])} | ${int(p.errors)} / ${int(p.requests)} |`,
    );
  }
  lines.push('', `Paths: ${results.paths.map((p) => `**${p.path}** ${p.description}`).join('; ')}.`, '');
  for (const table of [ratioTable(results.paths), newConnectionCpuTable(results.paths), tailTable(results.paths, profile), routingCostTable(results.paths), l7CostTable(results.paths)]) {
    if (table !== undefined) lines.push(...table, '');
  }
  if (results.controlPlane.length > 0) lines.push(...controlPlaneTable(results.controlPlane), '');
  if (results.controlPlane.length > 0 && results.drivers !== undefined && !results.drivers.includes('dataplane')) {
    lines.push('Control-plane cases ran with the native driver only: set DATAPLANEAPI_BIN to a Data Plane API binary to run them with the Data Plane API driver (`-dataplane`) too.', '');
  }
  for (const f of results.failedCases ?? []) lines.push(`Control-plane case **${f.case}** failed: ${f.error.replaceAll('\n', ' ').replaceAll('|', '\\|')}`, '');
  if (results.timings !== undefined) lines.push(timingLine(results.timings, results.dataPlaneRuns), '');
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

/** CPU µs per request of a component role, one value per fixed-rate round. */
const cpuRounds = (p: PathSummary, role: string): number[] => p.cpuUsPerRequest[role] ?? [];

/** Both sidecars together (source + destination), one value per round of `byRole`. */
function sidecarSum(byRole: Record<string, number[]>): number[] {
  const destination = byRole['destination sidecar'] ?? [];
  return (byRole['source sidecar'] ?? []).map((source, i) => source + (destination[i] ?? Number.NaN));
}

/** CPU µs per request of both sidecars together (source + destination), one value per fixed-rate round. */
export const sidecarCpuRounds = (p: PathSummary): number[] => sidecarSum(p.cpuUsPerRequest);

/** CPU µs per new connection of both sidecars together, one value per new-connection round. */
export const sidecarNewConnectionCpuRounds = (p: PathSummary): number[] => sidecarSum(p.newConnectionCpuUs ?? {});

/** The pairs the ratio table compares: haproxy-connect's plain pairs over their hand-written references. */
export const RATIO_PAIRS = [
  { path: 'hc-http', reference: 'reference-http' },
  { path: 'hc-tcp', reference: 'reference-tcp' },
] as const;
/** The claim the ratio table answers: within this fraction of the reference. */
export const RATIO_TOLERANCE = 0.05;

const RATIO_FIGURES: ReadonlyArray<{ label: string; rounds: (p: PathSummary) => number[]; format: (n: number) => string }> = [
  { label: 'CPU µs/req, sidecars (source + destination)', rounds: sidecarCpuRounds, format: one },
  { label: 'p99 µs, fixed rate', rounds: (p) => p.p99Us, format: int },
  { label: 'p99 µs, new connection', rounds: (p) => p.newConnectionP99Us, format: int },
  { label: 'CPU µs per new connection, sidecars (source + destination)', rounds: sidecarNewConnectionCpuRounds, format: one },
  { label: 'keep-alive req/s', rounds: (p) => p.keepAliveRps, format: int },
];

const measured = (p: PathSummary): boolean => p.p99Us.length > 0 || p.keepAliveRps.length > 0;

/**
 * haproxy-connect over the hand-written reference, per pair and figure: both medians with their
 * ranges, the ratio of the medians, its bootstrap 95 % interval (lib/stats.ts, seeded: the same
 * results give the same table) and whether that interval says "within ±5 %"; direct's median is
 * the generator's floor (for keep-alive, its ceiling). Undefined when no pair was measured. Pure.
 */
export function ratioTable(paths: readonly PathSummary[], seed: number = BOOTSTRAP_SEED): string[] | undefined {
  const find = (name: string): PathSummary | undefined => paths.find((p) => p.path === name && measured(p));
  const direct = find('direct');
  const rows = RATIO_PAIRS.flatMap(({ path, reference }) => {
    const p = find(path);
    const r = find(reference);
    if (p === undefined || r === undefined) return [];
    return RATIO_FIGURES.map(({ label, rounds, format }) => {
      const estimate = bootstrapRatio(rounds(p), rounds(r), { seed });
      const interval = estimate?.interval === undefined ? '–' : `${estimate.interval.low.toFixed(2)}–${estimate.interval.high.toFixed(2)}`;
      const verdict = estimate === undefined ? '–' : withinVerdict(estimate.interval, RATIO_TOLERANCE);
      const floor = direct === undefined ? '–' : spreadCell(rounds(direct), format);
      return `| ${path} / ${reference} | ${label} | ${spreadCell(rounds(p), format)} | ${spreadCell(rounds(r), format)} | ${estimate === undefined ? '–' : estimate.ratio.toFixed(2)} | ${interval} | ${verdict} | ${floor} |`;
    });
  });
  if (rows.length === 0) return undefined;
  return [
    `Ratios to the hand-written reference: median over median, with a 95 % bootstrap interval (each path's rounds resampled ${int(BOOTSTRAP_RESAMPLES)} times, seeded; none below 3 rounds). ` +
      `"Within ±${RATIO_TOLERANCE * 100} %" holds when the whole interval lies within ${(1 - RATIO_TOLERANCE).toFixed(2)}–${(1 + RATIO_TOLERANCE).toFixed(2)}, fails when it lies outside, and cannot be told otherwise.`,
    '',
    '| pair | figure | haproxy-connect | reference | ratio | 95 % interval | within ±5 % | direct (generator floor) |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ];
}

/**
 * CPU per new connection by component: the new-connection workload sends one request per
 * connection, so this is a full mTLS handshake between the sidecars, the request, and at a
 * destination that enforces intentions one decision of its SPOE agent (the destination daemon,
 * part of the destination sidecar). Undefined when no new-connection run read CPU. Pure.
 */
export function newConnectionCpuTable(paths: readonly PathSummary[]): string[] | undefined {
  const measuredPaths = paths.filter((p) => Object.values(p.newConnectionCpuUs ?? {}).some((rounds) => rounds.length > 0));
  if (measuredPaths.length === 0) return undefined;
  const cell = (p: PathSummary, role: string): string => spreadCell(p.newConnectionCpuUs?.[role] ?? [], one);
  return [
    'CPU per new connection (the new-connection workload: one request per connection), µs of on-CPU time per connection over each round:',
    '',
    '| path | source sidecar | destination sidecar | of which destination daemon | sidecars (source + destination) | app |',
    '|---|---|---|---|---|---|',
    ...measuredPaths.map(
      (p) =>
        `| ${p.path} | ${cell(p, 'source sidecar')} | ${cell(p, 'destination sidecar')} | ${cell(p, 'destination daemon')} | ${spreadCell(sidecarNewConnectionCpuRounds(p), one)} | ${cell(p, 'app')} |`,
    ),
  ];
}

/**
 * The tail workload's long runs (p99.9 and the maximum over one run), the direct row first as the
 * generator's floor. Undefined when the profile ran none. Pure.
 */
export function tailTable(paths: readonly PathSummary[], profile: Pick<Profile, 'durationS' | 'fixedRateQps' | 'fixedRateConnections'>): string[] | undefined {
  const tailed = paths.filter((p) => p.tail.length > 0).sort((a, b) => Number(b.path === 'direct') - Number(a.path === 'direct'));
  if (tailed.length === 0) return undefined;
  const figure = (p: PathSummary, f: (r: FixedRateResult) => number): string => spreadCell(p.tail.map(f));
  return [
    `Tails: one ${profile.durationS.tail} s run per path, fortio open loop at ${int(profile.fixedRateQps)} req/s over ${profile.fixedRateConnections} keep-alive connections; direct is the generator's floor.`,
    '',
    '| path | requests | p50 µs | p99 µs | p99.9 µs | max µs | errors |',
    '|---|---|---|---|---|---|---|',
    ...tailed.map(
      (p) =>
        `| ${p.path} | ${figure(p, (r) => r.requests)} | ${figure(p, (r) => r.p50Us)} | ${figure(p, (r) => r.p99Us)} | ${figure(p, (r) => r.p999Us)} | ${figure(p, (r) => r.maxUs)} | ${figure(p, (r) => r.errors)} |`,
    ),
  ];
}

/** The rows of a cost table that were measured at the fixed rate, in this order (absent paths left out). */
function fixedRateRows(paths: readonly PathSummary[], names: readonly string[]): PathSummary[] {
  return names.flatMap((name) => paths.filter((p) => p.path === name && p.p99Us.length > 0));
}

/**
 * What the service-router costs, from the same run: hc-http-routed next to hc-http, the
 * hand-written reference and direct (the generator's floor): the sidecars' CPU µs per request and
 * its difference over hc-http (medians), p50 and p99. Undefined without the routed path and hc-http,
 * or when no fixed-rate run measured them. Pure.
 */
export function routingCostTable(paths: readonly PathSummary[]): string[] | undefined {
  const rows = fixedRateRows(paths, ['direct', 'reference-http', 'hc-http', 'hc-http-routed']);
  const plain = rows.find((p) => p.path === 'hc-http');
  if (plain === undefined || !rows.some((p) => p.path === 'hc-http-routed')) return undefined;
  const over = (p: PathSummary): string =>
    p.path === 'direct' || p === plain
      ? '–'
      : `${signed(median(sidecarCpuRounds(p)) - median(sidecarCpuRounds(plain)))} (source sidecar ${signed(median(cpuRounds(p, 'source sidecar')) - median(cpuRounds(plain, 'source sidecar')))})`;
  return [
    "Routing: hc-http-routed next to hc-http, the hand-written reference and direct (the generator's floor), same run.",
    '',
    '| path | CPU µs/req source sidecar | CPU µs/req destination sidecar | CPU µs/req sidecars | over hc-http | p50 µs | p99 µs |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (p) =>
        `| ${p.path} | ${spreadCell(cpuRounds(p, 'source sidecar'), one)} | ${spreadCell(cpuRounds(p, 'destination sidecar'), one)} | ${spreadCell(sidecarCpuRounds(p), one)} | ${over(p)} | ${spreadCell(p.p50Us)} | ${spreadCell(p.p99Us)} |`,
    ),
  ];
}

/**
 * What L7 intentions cost, from the same run: hc-http-l7 (rendered ACL chain) and hc-http-l7-agent
 * (the agent decides every request) next to hc-http (no intentions beyond the default allow), the
 * hand-written reference and direct (the generator's floor): the sidecars' CPU µs per request
 * (source + destination) and the destination daemon's alone, each with its difference over hc-http
 * (medians), p50 and p99 at the fixed rate, keep-alive req/s. Undefined without an L7 path and
 * hc-http, or when no fixed-rate run measured them. Pure.
 */
export function l7CostTable(paths: readonly PathSummary[]): string[] | undefined {
  const rows = fixedRateRows(paths, ['direct', 'reference-http', 'hc-http', 'hc-http-l7', 'hc-http-l7-agent']);
  const plain = rows.find((p) => p.path === 'hc-http');
  if (plain === undefined || !rows.some((p) => p.path.startsWith('hc-http-l7'))) return undefined;
  const daemon = (p: PathSummary): number[] => cpuRounds(p, 'destination daemon');
  const over = (p: PathSummary, f: (p: PathSummary) => number[]): string => (p.path === 'direct' || p === plain ? '–' : signed(median(f(p)) - median(f(plain))));
  return [
    "L7 intentions: the L7 paths next to hc-http (an L4 allow), the hand-written reference and direct (the generator's floor), same run.",
    '',
    '| path | CPU µs/req sidecars | over hc-http | of which the destination daemon | over hc-http | p50 µs | p99 µs | keep-alive req/s |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (p) =>
        `| ${p.path} | ${spreadCell(sidecarCpuRounds(p), one)} | ${over(p, sidecarCpuRounds)} | ${spreadCell(daemon(p), one)} | ${over(p, daemon)} | ${spreadCell(p.p50Us)} | ${spreadCell(p.p99Us)} | ${spreadCell(p.keepAliveRps)} |`,
    ),
  ];
}

const seconds = (s: number): string => `${Math.round(s)} s`;

/** Where the run's time went: the testbed, each workload (its runs' wall time), each control-plane case. Pure. */
export function timingLine(timings: Timings, runs: readonly DataPlaneRun[]): string {
  const workloads = WORKLOADS.flatMap((w) => {
    const of = runs.filter((r) => r.workload === w);
    return of.length === 0 ? [] : [`${w} ${seconds(of.reduce((sum, r) => sum + (r.elapsedS ?? 0), 0))} in ${of.length} runs`];
  });
  const cases = timings.controlPlane.map((c) => `${c.case}${c.driver === 'native' ? '' : ` (${c.driver})`} ${seconds(c.seconds)}`);
  const controlPlaneS = timings.controlPlane.reduce((sum, c) => sum + c.seconds, 0);
  return (
    `Time: testbed ${seconds(timings.testbedS)}; data plane ${seconds(timings.dataPlaneS)}${workloads.length > 0 ? ` (${workloads.join(', ')})` : ''}; ` +
    `control plane ${seconds(controlPlaneS)}${cases.length > 0 ? ` (${cases.join(', ')})` : ''}; total ${(timings.totalS / 60).toFixed(1)} min.`
  );
}

const runLabel = (r: { path: string; workload: Workload; round: number }): string => `${r.path} ${r.workload} round ${r.round}`;
/** Missing runs named in a problem before the rest are only counted. */
const MISSING_RUNS_NAMED = 5;

/**
 * Problems that make a run invalid: a planned data-plane run missing (profile.ts `plannedRuns`:
 * the rounds of every workload over its paths), a run without a completed request, a case that did
 * not run, or too many errors. Pure.
 */
export function findProblems(results: Results, expectedRuns: readonly PlannedRun[], expectedCases: ReadonlyArray<{ name: string; samples: number; driver?: Driver }>, maxErrorRatio: number): string[] {
  const problems: string[] = [];
  const runs = results.dataPlaneRuns;
  if (runs.length !== expectedRuns.length) problems.push(`expected ${expectedRuns.length} data-plane runs, got ${runs.length}`);
  const missing = expectedRuns.filter((e) => !runs.some((r) => r.path === e.path && r.workload === e.workload && r.round === e.round));
  if (missing.length > 0) {
    const named = missing.slice(0, MISSING_RUNS_NAMED).map(runLabel).join(', ');
    problems.push(`data-plane runs missing: ${named}${missing.length > MISSING_RUNS_NAMED ? ` and ${missing.length - MISSING_RUNS_NAMED} more` : ''}`);
  }
  for (const r of runs) {
    const requests = r.saturation?.requests ?? r.fixedRate?.requests ?? 0;
    if (requests === 0) problems.push(`${runLabel(r)}: no request completed`);
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
