/** The profiles' plans (which runs, in which order, how long) and the data-plane tables of the report. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { DataPlaneRun } from '../data-plane.js';
import type { FixedRateResult } from '../lib/load-tools.js';
import { FULL_DATA_PLANE_BUDGET_S, PRIMARY_PATHS, plannedRuns, plannedSeconds, PROFILES, roundsOf, TAIL_PATHS, WORKLOADS } from '../profile.js';
import { describePlan, findProblems, newConnectionCpuTable, type PathSummary, ratioTable, type Results, spreadCell, summarizePaths, tailTable, timingLine } from '../report.js';

/** The testbed's paths, in its order (bench/testbed.ts). */
const TESTBED_PATHS = [
  'direct',
  'reference-http',
  'reference-tcp',
  'consul-proxy',
  'hc-http',
  'hc-http-l7',
  'hc-http-l7-agent',
  'hc-http-routed',
  'hc-tcp',
  'hc-tcp-no-intentions',
  'hc-http-no-intentions',
];
const SECONDARY_PATHS = TESTBED_PATHS.filter((p) => !(PRIMARY_PATHS as readonly string[]).includes(p));

describe('the profiles', () => {
  const full = plannedRuns(PROFILES.full, TESTBED_PATHS);
  const count = (workload: string, path: string): number => full.filter((r) => r.workload === workload && r.path === path).length;
  /** Runs of each path: keep-alive, `Connection: close`, fixed-rate, new-connection, tail. */
  const counts = (path: string): number[] => WORKLOADS.map((w) => count(w, path));
  test('full: 3 keep-alive and 4 fixed-rate and new-connection rounds over the ratio paths, 2 for direct, fewer elsewhere, the tail over its three paths', () => {
    assert.deepEqual(counts('reference-http'), [3, 1, 4, 4, 1]);
    assert.deepEqual(counts('hc-http'), [3, 1, 4, 4, 1]);
    assert.deepEqual(counts('reference-tcp'), [3, 1, 4, 4, 0]);
    assert.deepEqual(counts('hc-tcp'), [3, 1, 4, 4, 0]);
    assert.deepEqual(counts('direct'), [2, 1, 2, 2, 1]);
    for (const path of SECONDARY_PATHS) assert.deepEqual(counts(path), [1, 0, 1, 0, 0], path);
    assert.deepEqual(
      full.filter((r) => r.workload === 'tail').map((r) => r.path),
      [...TAIL_PATHS],
    );
    assert.equal(full.length, 70);
  });
  test('full: rounds alternate the order of their paths (A B … / … B A)', () => {
    const round = (n: number): string[] => full.filter((r) => r.workload === 'fixed-rate' && r.round === n).map((r) => r.path);
    assert.deepEqual(round(1), TESTBED_PATHS);
    assert.deepEqual(round(2), ['hc-tcp', 'hc-http', 'reference-tcp', 'reference-http', 'direct']);
    assert.deepEqual(round(3), ['reference-http', 'reference-tcp', 'hc-http', 'hc-tcp']);
    assert.deepEqual(round(4), ['hc-tcp', 'hc-http', 'reference-tcp', 'reference-http']);
    // Workload after workload, in WORKLOADS order.
    assert.deepEqual([...new Set(full.map((r) => r.workload))], [...WORKLOADS]);
  });
  test('full: the data plane fits its budget (profile.ts)', () => {
    const seconds = plannedSeconds(PROFILES.full, full);
    assert.equal(seconds, 60 + 15 + 72 + 54 + 183);
    assert.ok(seconds <= FULL_DATA_PLANE_BUDGET_S, String(seconds));
  });
  test('quick: every workload but the tail, once over every path', () => {
    const quick = plannedRuns(PROFILES.quick, TESTBED_PATHS);
    assert.equal(quick.length, 4 * TESTBED_PATHS.length);
    assert.ok(quick.every((r) => r.round === 1 && r.workload !== 'tail'));
  });
  test('roundsOf: the first entry of the workload that takes the path', () => {
    const profile = {
      plan: [
        { workload: 'keep-alive', rounds: 4, paths: ['a'] },
        { workload: 'keep-alive', rounds: 1 },
        { workload: 'fixed-rate', rounds: 2, paths: ['b'] },
      ] as const,
    };
    assert.deepEqual(
      ['a', 'b'].map((p) => [roundsOf(profile, 'keep-alive', p), roundsOf(profile, 'fixed-rate', p), roundsOf(profile, 'tail', p)]),
      [
        [4, 0, 0],
        [1, 2, 0],
      ],
    );
  });
  test('describePlan says each workload, its length and its rounds', () => {
    const text = describePlan(PROFILES.full);
    assert.match(text, /keep-alive 2 s, 3 rounds of reference-http, reference-tcp, hc-http, hc-tcp and 2 rounds of direct and 1 round of the other paths;/);
    assert.match(text, /`Connection: close` 2 s, 1 round of direct, reference-http, reference-tcp, hc-http, hc-tcp;/);
    assert.match(text, /tail 60 s, 1 round of direct, reference-http, hc-http\./);
    assert.match(describePlan(PROFILES.quick), /fixed rate 2 s, 1 round of every path;/);
  });
});

describe('spreadCell', () => {
  test('median [min–max]; the value alone for one round or no spread; – for none', () => {
    assert.equal(spreadCell([1_200, 900, 1_067]), '1,067 [900–1,200]');
    assert.equal(spreadCell([1_067]), '1,067');
    assert.equal(spreadCell([1_067.2, 1_066.9]), '1,067');
    assert.equal(spreadCell([]), '–');
    assert.equal(
      spreadCell([1.25, 2, 1.5], (n) => n.toFixed(1)),
      '1.5 [1.3–2.0]',
    );
  });
});

/** The cells of a Markdown table row. */
const cells = (row: string): string[] =>
  row
    .split('|')
    .slice(1, -1)
    .map((c) => c.trim());

const fixedRate = (p99Us: number, extra: Partial<FixedRateResult> = {}): FixedRateResult => ({
  targetQps: 2_000,
  actualQps: 2_000,
  requests: 6_000,
  errors: 0,
  p50Us: p99Us / 4,
  p99Us,
  p999Us: p99Us * 3,
  maxUs: p99Us * 10,
  ...extra,
});

function summary(name: string, f: { cpu?: number[]; p99?: number[]; keepAlive?: number[]; newConnection?: number[]; newConnectionCpu?: number[]; tail?: FixedRateResult[] }): PathSummary {
  const cpu = f.cpu ?? [];
  const ncCpu = f.newConnectionCpu ?? [];
  return {
    path: name,
    description: '',
    keepAliveRps: f.keepAlive ?? [],
    connectionCloseRps: [],
    p50Us: [],
    p99Us: f.p99 ?? [],
    p999Us: [],
    newConnectionP50Us: [],
    newConnectionP99Us: f.newConnection ?? [],
    // Split evenly over the two sidecars: the table adds them up again.
    cpuUsPerRequest: name === 'direct' ? { app: [10] } : { 'source sidecar': cpu.map((c) => c / 2), 'destination sidecar': cpu.map((c) => c / 2) },
    // A quarter at the source, the rest at the destination, a third of that in its daemon.
    newConnectionCpuUs: ncCpu.length === 0 ? {} : { 'source sidecar': ncCpu.map((c) => c / 4), 'destination sidecar': ncCpu.map((c) => (c * 3) / 4), 'destination daemon': ncCpu.map((c) => c / 4) },
    tail: f.tail ?? [],
    rssKiB: {},
    errors: 0,
    requests: 1,
  };
}

describe('ratioTable', () => {
  const paths = [
    summary('direct', { p99: [700, 720, 690, 710], keepAlive: [20_000, 21_000, 20_500, 20_800], newConnection: [900, 950, 920, 930] }),
    summary('reference-http', {
      cpu: [200, 204, 198, 202],
      p99: [1_000, 1_010, 990, 1_005],
      keepAlive: [14_000, 14_100, 13_900, 14_050],
      newConnection: [1_500, 1_600, 1_550, 1_580],
      newConnectionCpu: [800, 820, 780, 840],
    }),
    summary('hc-http', {
      cpu: [204, 206, 202, 205],
      p99: [1_500, 1_520, 1_480, 1_510],
      keepAlive: [12_000, 12_200, 11_900, 12_100],
      newConnection: [1_550, 2_400, 1_500, 1_600],
      newConnectionCpu: [1_200, 1_240, 1_160, 1_280],
    }),
  ];
  const rows = ratioTable(paths)?.slice(4) ?? [];
  /** The cells of the row of `figure`: pair, figure, haproxy-connect, reference, ratio, interval, verdict, floor. */
  const row = (figure: string, table: readonly string[] = rows): string[] => cells(table.find((r) => r.includes(`| ${figure} |`)) ?? '');
  test('one row per figure of each pair measured (hc-tcp without its reference has none)', () => {
    assert.equal(rows.length, 5);
    assert.ok(rows.every((r) => r.startsWith('| hc-http / reference-http |')));
  });
  test('CPU: the sidecars added up, medians with ranges, a ratio within 5 % that the interval confirms', () => {
    const [, , hc, reference, ratio, interval, verdict, floor] = row('CPU µs/req, sidecars (source + destination)');
    assert.equal(hc, '204.5 [202.0–206.0]');
    assert.equal(reference, '201.0 [198.0–204.0]');
    assert.equal(ratio, '1.02');
    assert.match(interval ?? '', /^(0\.99|1\.00)–1\.0[34]$/);
    assert.equal(verdict, 'yes');
    assert.equal(floor, '–');
  });
  test('p99: 50 % over the reference is a clear no, with direct as the floor', () => {
    const [, , , , ratio, , verdict, floor] = row('p99 µs, fixed rate');
    assert.equal(ratio, '1.50');
    assert.equal(verdict, 'no');
    assert.equal(floor, '705 [690–720]');
  });
  test('one slow round moves neither the median nor the verdict', () => {
    const [, , hc, , ratio] = row('p99 µs, new connection');
    assert.equal(hc, '1,575 [1,500–2,400]');
    assert.equal(ratio, '1.01');
  });
  test('CPU per new connection: the sidecars added up; no floor, direct has no sidecar', () => {
    const [, , hc, reference, ratio, , verdict, floor] = row('CPU µs per new connection, sidecars (source + destination)');
    assert.equal(hc, '1220.0 [1160.0–1280.0]');
    assert.equal(reference, '810.0 [780.0–840.0]');
    assert.equal(ratio, '1.51');
    assert.equal(verdict, 'no');
    assert.equal(floor, '–');
  });
  test('keep-alive: the generator ceiling in the floor column', () => {
    const [, , , , ratio, , verdict, floor] = row('keep-alive req/s');
    assert.equal(ratio, '0.86');
    assert.equal(verdict, 'no');
    assert.equal(floor, '20,650 [20,000–21,000]');
  });
  test('reproducible, and without an interval below 3 rounds', () => {
    assert.deepEqual(ratioTable(paths), ratioTable(paths));
    const two = paths.map((p) => ({ ...p, p99Us: p.p99Us.slice(0, 2) }));
    const [, , , , ratio, interval, verdict] = row('p99 µs, fixed rate', ratioTable(two) ?? []);
    assert.deepEqual([ratio, interval, verdict], ['1.50', '–', 'cannot tell']);
  });
  test('absent when no pair was measured', () => {
    assert.equal(ratioTable([summary('hc-http', {}), summary('reference-http', {})]), undefined);
    assert.equal(ratioTable([paths[2] as PathSummary]), undefined);
  });
});

describe('newConnectionCpuTable', () => {
  test('each path with new-connection CPU: by component, the sidecars added up; paths without it left out', () => {
    const table = newConnectionCpuTable([summary('direct', {}), summary('reference-http', { newConnectionCpu: [800, 840] }), summary('hc-http', { newConnectionCpu: [1_200] })]);
    assert.deepEqual(table?.slice(2), [
      '| path | source sidecar | destination sidecar | of which destination daemon | sidecars (source + destination) | app |',
      '|---|---|---|---|---|---|',
      '| reference-http | 205.0 [200.0–210.0] | 615.0 [600.0–630.0] | 205.0 [200.0–210.0] | 820.0 [800.0–840.0] | – |',
      '| hc-http | 300.0 | 900.0 | 300.0 | 1200.0 | – |',
    ]);
  });
  test('absent when no new-connection run read CPU (results from before it did)', () => {
    assert.equal(newConnectionCpuTable([summary('hc-http', {})]), undefined);
    assert.equal(newConnectionCpuTable([{ ...summary('hc-http', {}), newConnectionCpuUs: undefined }]), undefined);
  });
});

describe('tailTable', () => {
  const profile = PROFILES.full;
  test('the direct row first as the floor, p99.9 and the maximum of each long run', () => {
    const table = tailTable(
      [
        summary('reference-http', { tail: [fixedRate(1_000, { requests: 120_000 })] }),
        summary('hc-http', { tail: [fixedRate(1_500, { errors: 2 })] }),
        summary('direct', { tail: [fixedRate(700)] }),
        summary('hc-tcp', {}),
      ],
      profile,
    );
    assert.match(table?.[0] ?? '', /^Tails: one 60 s run per path, fortio open loop at 2,000 req\/s over 8 keep-alive connections; direct is the generator's floor\.$/);
    assert.deepEqual(table?.slice(2), [
      '| path | requests | p50 µs | p99 µs | p99.9 µs | max µs | errors |',
      '|---|---|---|---|---|---|---|',
      '| direct | 6,000 | 175 | 700 | 2,100 | 7,000 | 0 |',
      '| reference-http | 120,000 | 250 | 1,000 | 3,000 | 10,000 | 0 |',
      '| hc-http | 6,000 | 375 | 1,500 | 4,500 | 15,000 | 2 |',
    ]);
  });
  test('absent when the profile ran no tail', () => assert.equal(tailTable([summary('direct', {})], profile), undefined));
});

describe('summarizePaths', () => {
  const path = { name: 'hc-http', description: 'pair', url: '', components: [] };
  const runs: DataPlaneRun[] = [
    { path: 'hc-http', workload: 'fixed-rate', round: 1, fixedRate: fixedRate(1_000), cpu: [{ role: 'source sidecar', cpuMs: 1, usPerRequest: 100 }] },
    { path: 'hc-http', workload: 'fixed-rate', round: 2, fixedRate: fixedRate(1_100), cpu: [{ role: 'source sidecar', cpuMs: 1, usPerRequest: 110 }] },
    { path: 'hc-http', workload: 'tail', round: 1, fixedRate: fixedRate(1_200, { requests: 120_000, errors: 3 }) },
    { path: 'hc-http', workload: 'new-connection', round: 1, fixedRate: fixedRate(2_000, { requests: 200 }), cpu: [{ role: 'source sidecar', cpuMs: 60, usPerRequest: 300 }] },
    { path: 'other', workload: 'fixed-rate', round: 1, fixedRate: fixedRate(5) },
  ];
  const [s] = summarizePaths([path], runs);
  test("each round's values in the order measured: percentiles, CPU by role", () => {
    assert.deepEqual(s?.p99Us, [1_000, 1_100]);
    assert.deepEqual(s?.cpuUsPerRequest, { 'source sidecar': [100, 110] });
  });
  test('CPU per new connection from the new-connection rounds only', () => {
    assert.deepEqual(s?.newConnectionCpuUs, { 'source sidecar': [300] });
  });
  test('the tail runs apart from the fixed-rate rounds; their requests and errors count', () => {
    assert.deepEqual(
      s?.tail.map((t) => t.p99Us),
      [1_200],
    );
    assert.deepEqual([s?.errors, s?.requests], [3, 132_200]);
  });
});

function results(runs: DataPlaneRun[]): Results {
  return {
    startedAt: 't0',
    finishedAt: 't1',
    profile: PROFILES.full,
    environment: { haproxy: '', openssl: '', node: '', consul: '', haproxyConnect: '', wrk: '', fortio: '', kernel: '', cpuCount: 2, cpuModel: '', gitCommit: '' },
    machine: { loadAverageAtStart: 0, loadAverageAtEnd: 0, busyNote: '', pinning: '', daemonFrom: 'tsx' },
    paths: [],
    dataPlaneRuns: runs,
    controlPlane: [],
  };
}

describe('findProblems with the planned runs', () => {
  const planned = plannedRuns(PROFILES.full, TESTBED_PATHS);
  const ran = (p: (typeof planned)[number]): DataPlaneRun =>
    p.workload === 'keep-alive' || p.workload === 'connection-close'
      ? { ...p, saturation: { requestsPerSecond: 1, requests: 1, durationS: 1, socketErrors: 0, non2xx: 0, latencyP50Ms: 1, latencyP99Ms: 1 } }
      : { ...p, fixedRate: fixedRate(1) };
  test('every planned run (70 in the full profile) is no problem', () => {
    assert.equal(planned.length, 70);
    assert.deepEqual(findProblems(results(planned.map(ran)), planned, [], 0.01), []);
  });
  test('a missing round is named, with the count', () => {
    const lost = planned.filter((p) => !(p.path === 'hc-http' && p.workload === 'fixed-rate' && p.round === 3));
    assert.deepEqual(findProblems(results(lost.map(ran)), planned, [], 0.01), ['expected 70 data-plane runs, got 69', 'data-plane runs missing: hc-http fixed-rate round 3']);
  });
  test('many missing: the first five named, the rest counted', () => {
    const problems = findProblems(results([]), planned, [], 0.01);
    assert.equal(problems[0], 'expected 70 data-plane runs, got 0');
    assert.match(problems[1] ?? '', /^data-plane runs missing: direct keep-alive round 1, reference-http keep-alive round 1, .* and 65 more$/);
  });
  test('the runs of the old plan (2 rounds of everything) do not pass for the new one', () => {
    const old = TESTBED_PATHS.flatMap((path) =>
      ['keep-alive', 'connection-close', 'fixed-rate', 'new-connection'].flatMap((workload) => [1, 2].map((round) => ran({ path, workload, round } as (typeof planned)[number]))),
    );
    assert.ok(findProblems(results(old), planned, [], 0.01).length > 0);
  });
  test('a tail run without a request is a problem like any other', () => {
    const runs = planned.map(ran).map((r) => (r.workload === 'tail' && r.path === 'direct' ? { ...r, fixedRate: fixedRate(1, { requests: 0 }) } : r));
    assert.deepEqual(findProblems(results(runs), planned, [], 0.01), ['direct tail round 1: no request completed']);
  });
});

describe('timingLine', () => {
  test('the testbed, each workload with its runs, each case, the total', () => {
    const runs = [
      { path: 'direct', workload: 'fixed-rate', round: 1, elapsedS: 4.2 },
      { path: 'hc-http', workload: 'fixed-rate', round: 1, elapsedS: 4.1 },
      { path: 'direct', workload: 'tail', round: 1, elapsedS: 61.3 },
    ] as DataPlaneRun[];
    const line = timingLine(
      {
        testbedS: 9.6,
        dataPlaneS: 70,
        controlPlane: [
          { case: 'endpoint-churn', driver: 'native', seconds: 12.4 },
          { case: 'endpoint-churn', driver: 'dataplane', seconds: 20 },
        ],
        totalS: 112,
      },
      runs,
    );
    assert.equal(
      line,
      'Time: testbed 10 s; data plane 70 s (fixed-rate 8 s in 2 runs, tail 61 s in 1 runs); control plane 32 s (endpoint-churn 12 s, endpoint-churn (dataplane) 20 s); total 1.9 min.',
    );
  });
});
