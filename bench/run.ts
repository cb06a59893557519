/**
 * The benchmark harness: `node --import tsx bench/run.ts [--quick] [--note "..."] [--cases a,b]`.
 * Starts the testbed (bench/testbed.ts), runs the data-plane workloads (bench/data-plane.ts: the
 * profile's plan of rounds per workload and path, bench/profile.ts) and the control-plane cases
 * (bench/control-plane/cases.ts), writes bench/results/<timestamp>.json (every round's values) and
 * bench/results/latest.md (medians with their ranges, the ratio table with bootstrap intervals, the
 * tails, and where the time went), and stops everything it started by pid, also on failure or Ctrl-C.
 * The full profile takes about 10 minutes on 2 cores (daemon memory is its own run: make bench-memory)
 * (the time budget is in bench/profile.ts); the quick one about 4.5.
 * With --quick it is a smoke test: it exits 1 unless every case ran. A control-plane case that fails
 * is reported (console, results, Markdown) and the run goes on with the next one, but still exits 1.
 * `--cases` runs only the named control-plane cases and no data-plane workload (while working on a
 * case), also one kept out of the profile (intention-scale runs in the full profile only).
 * With DATAPLANEAPI_BIN set, every control-plane case runs twice, its sidecars under test first with
 * the native driver, then with the Data Plane API driver (`-dataplane`); the second run's results
 * carry `driver: 'dataplane'` and the RSS of its Data Plane API processes.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../devtools/consul-dev-agent.js';
import { DATAPLANEAPI_BIN, dataplaneArgs } from '../devtools/haproxy-bin.js';
import { repeatsOf, runsIn, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult, type Driver } from './control-plane/case.js';
import { CONTROL_PLANE_CASES } from './control-plane/cases.js';
import { runDataPlane, type DataPlaneRun } from './data-plane.js';
import { sampleDataplaneRss } from './lib/dataplane-rss.js';
import { loadAverage } from './lib/proc-stats.js';
import { ProcessRegistry } from './lib/procs.js';
import { captureEnvironment } from './lib/versions.js';
import { GENERATOR_CORE, plannedRuns, plannedSeconds, PROFILES, SUT_CORE, type Profile } from './profile.js';
import { findProblems, renderMarkdown, summarizePaths, type Results, type Timings } from './report.js';
import { startTestbed, type Testbed } from './testbed.js';

const RESULTS_DIR = join(REPO_ROOT, 'bench/results');
/** Above this load average before anything starts, the machine is reported as busy. */
const BUSY_LOAD_AVERAGE = 0.5;
/** Share of failed requests that invalidates a run. */
const MAX_ERROR_RATIO = 0.01;
/** Characters of a failed case's error kept in the results. */
const FAILURE_IN_REPORT_CHARS = 1_000;

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const secondsSince = (start: number): number => (performance.now() - start) / 1000;

/** One progress line per data-plane run: what it measured and how long it took. */
function progressLine(run: DataPlaneRun): string {
  const s = run.saturation;
  const f = run.fixedRate;
  let detail: string;
  if (s !== undefined) detail = `${Math.round(s.requestsPerSecond)} req/s (${s.socketErrors + s.non2xx} errors)`;
  else if (run.workload === 'tail')
    detail = `p99 ${f?.p99Us.toFixed(0)} µs p99.9 ${f?.p999Us.toFixed(0)} µs max ${f?.maxUs.toFixed(0)} µs over ${f?.requests} requests at ${f?.actualQps.toFixed(0)} req/s`;
  else {
    detail =
      `p50 ${f?.p50Us.toFixed(0)} µs p99 ${f?.p99Us.toFixed(0)} µs p99.9 ${f?.p999Us.toFixed(0)} µs at ${f?.actualQps.toFixed(0)} req/s; ` +
      (run.cpu ?? []).map((c) => `${c.role} ${c.usPerRequest.toFixed(1)} µs/req`).join(', ');
  }
  return `bench: ${run.workload} round ${run.round} ${run.path}: ${detail} (${run.elapsedS?.toFixed(1)} s)`;
}

/** The drivers every control-plane case runs with: the Data Plane API's only when its binary is given. */
const DRIVERS: readonly Driver[] = DATAPLANEAPI_BIN === undefined ? ['native'] : ['native', 'dataplane'];

/**
 * Runs `cpCase` with its sidecars under test on `driver`: for `dataplane`, every sidecar the case
 * starts on the testbed gets `-dataplane`, an in-process one `ctx.dataplaneBin`, and the Data Plane
 * API processes are sampled for their RSS while it runs. Every result is tagged with the driver.
 */
async function runCase(cpCase: ControlPlaneCase, driver: Driver, base: Omit<ControlPlaneContext, 'driver' | 'dataplaneBin'>): Promise<ControlPlaneResult[]> {
  if (driver === 'native' || DATAPLANEAPI_BIN === undefined) {
    return (await cpCase.run({ ...base, driver: 'native', dataplaneBin: undefined })).map((r) => ({ ...r, driver: 'native' }));
  }
  const { testbed } = base;
  const ctx: ControlPlaneContext = {
    ...base,
    testbed: { ...testbed, startHaproxyConnect: (name, serviceId, extraArgs = [], nodeFlags = []) => testbed.startHaproxyConnect(name, serviceId, [...extraArgs, ...dataplaneArgs()], nodeFlags) },
    driver,
    dataplaneBin: DATAPLANEAPI_BIN,
  };
  const sampler = sampleDataplaneRss(DATAPLANEAPI_BIN);
  const results = await cpCase.run(ctx).finally(() => sampler.stop());
  const dataplaneApiRss = sampler.peaks();
  return results.map((r) => ({ ...r, driver, ...(dataplaneApiRss !== undefined && { dataplaneApiRss }) }));
}

function parseArgs(argv: readonly string[]): { profile: Profile; note: string; cases: readonly ControlPlaneCase[] | undefined } {
  let profile = PROFILES.full;
  let note = '';
  let cases: ControlPlaneCase[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') profile = PROFILES.quick;
    else if (arg === '--note') note = argv[++i] ?? '';
    else if (arg === '--cases') {
      cases = (argv[++i] ?? '').split(',').map((name) => {
        const found = CONTROL_PLANE_CASES.find((c) => c.name === name);
        if (found === undefined) throw new Error(`unknown case '${name}' (known: ${CONTROL_PLANE_CASES.map((c) => c.name).join(', ')})`);
        return found;
      });
    } else throw new Error(`unknown argument '${arg}' (expected --quick, --note "<text>" or --cases <name,...>)`);
  }
  return { profile, note, cases };
}

async function main(): Promise<number> {
  const { profile, note, cases } = parseArgs(process.argv.slice(2));
  const controlPlaneCases = cases ?? CONTROL_PLANE_CASES.filter((c) => runsIn(c, profile));
  const multiCore = cpus().length >= 2;
  const generatorCore = multiCore ? GENERATOR_CORE : 0;
  const sutCore = multiCore ? SUT_CORE : 0;
  // This orchestrator shares the generator's core, so its timers and GC stay off the SUT core.
  execFileSync('taskset', ['-a', '-p', '-c', String(generatorCore), String(process.pid)], { stdio: 'ignore' });
  const loadAverageAtStart = loadAverage();
  const startedAt = new Date().toISOString();
  const started = performance.now();
  const environment = captureEnvironment();
  say(`bench: ${profile.name} profile; load average ${loadAverageAtStart.toFixed(2)}; ${environment.haproxy}; ${environment.consul}`);
  if (DATAPLANEAPI_BIN !== undefined) say(`bench: control-plane cases run twice: native driver, then the Data Plane API driver (${DATAPLANEAPI_BIN})`);

  const registry = new ProcessRegistry();
  let testbed: Testbed | undefined;
  const hardStop = (): void => {
    registry.killAllNow();
    testbed?.agent.process.kill('SIGKILL');
  };
  process.once('exit', hardStop);
  const interruption = new AbortController();
  const interrupted = new Promise<never>((_, reject) => {
    const onSignal = (signal: string): void => {
      const reason = new Error(`interrupted by ${signal}`);
      interruption.abort(reason); // kills a running load generator
      reject(reason);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  interrupted.catch(() => undefined); // handled where it is raced

  try {
    testbed = await startTestbed(registry, sutCore, interruption.signal);
    const bed = testbed;
    const timings: Timings = { testbedS: secondsSince(started), dataPlaneS: 0, controlPlane: [], totalS: 0 };
    say(`bench: testbed up in ${timings.testbedS.toFixed(0)} s (${bed.paths.map((p) => p.name).join(', ')}); haproxy-connect from ${bed.daemonFrom}`);
    const pathNames = bed.paths.map((p) => p.name);
    const planned = cases !== undefined ? [] : plannedRuns(profile, pathNames);
    if (planned.length > 0) say(`bench: data plane: ${planned.length} runs, ${plannedSeconds(profile, planned)} s of load planned`);
    const dataPlaneStarted = performance.now();
    const runs = await Promise.race([runDataPlane(bed.paths, planned, profile, interruption.signal, (run) => say(progressLine(run))), interrupted]);
    timings.dataPlaneS = secondsSince(dataPlaneStarted);
    const controlPlane: ControlPlaneResult[] = [];
    const failedCases: NonNullable<Results['failedCases']> = [];
    for (const cpCase of controlPlaneCases) {
      const repeats = repeatsOf(cpCase, profile);
      for (const driver of DRIVERS) {
        const label = driver === 'native' ? cpCase.name : `${cpCase.name} (${driver} driver)`;
        say(`bench: control-plane case ${label} (${repeats} repetitions)`);
        const caseStarted = performance.now();
        try {
          controlPlane.push(...(await Promise.race([runCase(cpCase, driver, { testbed: bed, registry, profile, repeats, log: say }), interrupted])));
        } catch (err) {
          // A failed case (it cleaned up after itself) does not cost the results of the others; the
          // run still fails (findProblems: the case did not run).
          if (interruption.signal.aborted) throw err;
          const error = err instanceof Error ? err.message : String(err);
          say(`bench: control-plane case ${label} failed: ${error}`);
          failedCases.push({ case: label, error: error.slice(0, FAILURE_IN_REPORT_CHARS) });
        }
        timings.controlPlane.push({ case: cpCase.name, driver, seconds: secondsSince(caseStarted) });
        say(`bench: control-plane case ${label} took ${secondsSince(caseStarted).toFixed(0)} s`);
      }
    }
    timings.totalS = secondsSince(started);
    const loadAverageAtEnd = loadAverage();
    const busyNote = [loadAverageAtStart > BUSY_LOAD_AVERAGE ? `The machine was busy before the run started (load average ${loadAverageAtStart.toFixed(2)}): treat the numbers as noisy.` : '', note]
      .filter((s) => s !== '')
      .join(' ');
    const results: Results = {
      startedAt,
      finishedAt: new Date().toISOString(),
      profile,
      environment,
      machine: {
        loadAverageAtStart,
        loadAverageAtEnd,
        busyNote,
        daemonFrom: bed.daemonFrom,
        pinning: multiCore ? `generator on core ${generatorCore}, system under test on core ${sutCore} (taskset)` : 'single CPU: generator and system under test share core 0',
      },
      paths: summarizePaths(bed.paths, runs),
      dataPlaneRuns: runs,
      controlPlane,
      drivers: DRIVERS,
      failedCases,
      timings,
    };
    mkdirSync(RESULTS_DIR, { recursive: true });
    const stamp = startedAt.replace(/[:.]/g, '-');
    writeFileSync(join(RESULTS_DIR, `${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`);
    const markdown = renderMarkdown(results);
    // A partial run (--cases) does not replace the latest full table.
    if (cases === undefined) writeFileSync(join(RESULTS_DIR, 'latest.md'), markdown);
    say('');
    say(markdown);
    say(`bench: wrote bench/results/${stamp}.json${cases === undefined ? ' and bench/results/latest.md' : ''}`);
    const problems = findProblems(
      results,
      planned,
      controlPlaneCases.flatMap((c) => DRIVERS.flatMap((driver) => c.produces.map((name) => ({ name, driver, samples: repeatsOf(c, profile) })))),
      MAX_ERROR_RATIO,
    );
    for (const problem of problems) process.stderr.write(`bench: problem: ${problem}\n`);
    return problems.length === 0 ? 0 : 1;
  } finally {
    if (testbed !== undefined) await testbed.stop();
    else await registry.stopAll();
  }
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
// Pending signal listeners and the race promise must not keep the process alive.
process.exit();
