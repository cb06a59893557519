/**
 * The load generators: wrk (closed loop, saturation) and fortio (open loop at a fixed rate, for
 * latency percentiles). Both run pinned to the generator core; their output is parsed here.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { REPO_ROOT } from '../../devtools/consul-dev-agent.js';

export const FORTIO_BIN = process.env.FORTIO_BIN ?? join(REPO_ROOT, '.deps/bin/fortio');
export const WRK_BIN = process.env.WRK_BIN ?? 'wrk';
/** Histogram resolution for fortio: 10 µs buckets (its default, 1 ms, is useless on loopback). */
const FORTIO_RESOLUTION_S = 0.00001;
/** Extra time a generator may take beyond its nominal duration before it is killed. */
const GENERATOR_SLACK_MS = 30_000;

/** Runs a generator pinned to `core`; `signal` kills it (an interrupted benchmark leaves none behind). */
function run(core: number, command: string, args: readonly string[], timeoutMs: number, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('taskset', ['-c', String(core), command, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, signal }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${command} ${args.join(' ')} failed: ${err.message}\n${stderr.slice(-2000)}`));
      else resolve(stdout);
    });
  });
}

export interface SaturationResult {
  requestsPerSecond: number;
  requests: number;
  durationS: number;
  socketErrors: number;
  non2xx: number;
  latencyP50Ms: number | undefined;
  latencyP99Ms: number | undefined;
}

function wrkDurationMs(value: string, unit: string): number {
  const n = Number(value);
  if (unit === 'us') return n / 1000;
  if (unit === 'ms') return n;
  if (unit === 's') return n * 1000;
  if (unit === 'm') return n * 60_000;
  throw new Error(`unknown wrk latency unit '${unit}'`);
}

/** Parses wrk's text report (`--latency`). Pure. */
export function parseWrk(output: string): SaturationResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  const total = /^\s*(\d+) requests in ([\d.]+)(ms|s|m)/m.exec(output);
  if (rps?.[1] === undefined || total?.[1] === undefined || total[2] === undefined || total[3] === undefined) {
    throw new Error(`cannot parse wrk output: ${output.slice(0, 1000)}`);
  }
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = errors === null ? 0 : errors.slice(1).reduce((sum, n) => sum + Number(n), 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const percentile = (p: string): number | undefined => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(output);
    return m?.[1] === undefined || m[2] === undefined ? undefined : wrkDurationMs(m[1], m[2]);
  };
  return {
    requestsPerSecond: Number(rps[1]),
    requests: Number(total[1]),
    durationS: wrkDurationMs(total[2], total[3]) / 1000,
    socketErrors,
    non2xx,
    latencyP50Ms: percentile('50'),
    latencyP99Ms: percentile('99'),
  };
}

export interface WrkOptions {
  core: number;
  url: string;
  durationS: number;
  connections: number;
  connectionClose: boolean;
  signal: AbortSignal;
}

export async function runWrk(options: WrkOptions): Promise<SaturationResult> {
  const args = ['-t1', `-c${options.connections}`, `-d${options.durationS}s`, '--latency'];
  if (options.connectionClose) args.push('-H', 'Connection: close');
  args.push(options.url);
  return parseWrk(await run(options.core, WRK_BIN, args, options.durationS * 1000 + GENERATOR_SLACK_MS, options.signal));
}

const fortioReportSchema = z.object({
  ActualQPS: z.number(),
  RetCodes: z.record(z.string(), z.number()).nullish(),
  ErrorsDurationHistogram: z.object({ Count: z.number() }).nullish(),
  DurationHistogram: z.object({
    Count: z.number(),
    Min: z.number(),
    Max: z.number(),
    Avg: z.number(),
    Percentiles: z.array(z.object({ Percentile: z.number(), Value: z.number() })).nullish(),
  }),
});

export interface FixedRateResult {
  targetQps: number;
  actualQps: number;
  requests: number;
  errors: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

/** Parses fortio's JSON report. Pure. */
export function parseFortio(json: string, targetQps: number): FixedRateResult {
  const report = fortioReportSchema.parse(JSON.parse(json));
  const hist = report.DurationHistogram;
  const at = (p: number): number => {
    const found = hist.Percentiles?.find((x) => Math.abs(x.Percentile - p) < 1e-9);
    if (found === undefined) throw new Error(`fortio report has no p${p}: ${JSON.stringify(hist.Percentiles)}`);
    return found.Value * 1e6;
  };
  const ok = report.RetCodes?.['200'] ?? 0;
  return {
    targetQps,
    actualQps: report.ActualQPS,
    requests: hist.Count,
    errors: hist.Count - ok,
    p50Us: at(50),
    p99Us: at(99),
    p999Us: at(99.9),
    maxUs: hist.Max * 1e6,
  };
}

export interface FortioOptions {
  core: number;
  url: string;
  qps: number;
  durationS: number;
  connections: number;
  /** false: a new connection for every request. */
  keepAlive?: boolean;
  signal: AbortSignal;
}

export async function runFortio(options: FortioOptions): Promise<FixedRateResult> {
  if (!existsSync(FORTIO_BIN)) throw new Error(`fortio not found at ${FORTIO_BIN} (run scripts/build-bench-tools.sh)`);
  const args = [
    'load',
    '-quiet',
    '-qps',
    String(options.qps),
    '-c',
    String(options.connections),
    '-t',
    `${options.durationS}s`,
    '-uniform',
    '-nocatchup',
    '-r',
    String(FORTIO_RESOLUTION_S),
    '-p',
    '50,99,99.9',
    ...(options.keepAlive === false ? ['-keepalive=false'] : []),
    '-json',
    '-',
    options.url,
  ];
  return parseFortio(await run(options.core, FORTIO_BIN, args, options.durationS * 1000 + GENERATOR_SLACK_MS, options.signal), options.qps);
}
