/**
 * `haproxy -c` (configuration check) and `haproxy -v` (version), run as child processes.
 */
import { execFile } from 'node:child_process';
import { HaproxyConnectError, errorMessage, type ErrorCode } from '../errors.js';
import { haproxyEnv } from './child-env.js';

/** A check of a large config takes well under a second; this only bounds a hung binary. */
export const CHECK_TIMEOUT_MS = 30_000;
const VERSION_TIMEOUT_MS = 10_000;
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** Lines of output kept in an error message when HAProxy printed no [ALERT] line. */
const TAIL_LINES = 10;

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface ExecFailure extends Error {
  code?: string | number | null;
  killed?: boolean;
  signal?: NodeJS.Signals | null;
  stdout?: string;
  stderr?: string;
}

/** `timeoutCode`: what a run that does not finish in time means for the caller. */
function run(bin: string, args: string[], timeoutMs: number, timeoutCode: ErrorCode, signal?: AbortSignal): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs, maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8', signal, env: haproxyEnv() }, (error: ExecFailure | null, stdout: string, stderr: string) => {
      if (!error) {
        resolve({ code: 0, stdout, stderr });
        return;
      }
      if (error.name === 'AbortError') {
        reject(new HaproxyConnectError('ABORTED', `'${bin} ${args.join(' ')}' cancelled`, { cause: signal?.reason }));
        return;
      }
      if (error.code === 'ENOENT' || error.code === 'EACCES') {
        reject(
          new HaproxyConnectError('HAPROXY_NOT_FOUND', `Cannot run haproxy binary '${bin}': ${error.code}`, {
            cause: error,
          }),
        );
        return;
      }
      if (typeof error.code === 'number') {
        resolve({ code: error.code, stdout, stderr });
        return;
      }
      if (error.killed) {
        reject(new HaproxyConnectError(timeoutCode, `'${bin} ${args.join(' ')}' did not finish within ${timeoutMs} ms (killed with ${error.signal ?? 'a signal'})`, { cause: error }));
        return;
      }
      reject(
        new HaproxyConnectError('HAPROXY_NOT_FOUND', `Cannot run '${bin} ${args.join(' ')}': ${errorMessage(error)}`, {
          cause: error,
        }),
      );
    });
  });
}

/**
 * Runs `haproxy -c -f <cfg>`. Resolves if HAProxy accepts the configuration; otherwise throws
 * HAPROXY_CONFIG_REJECTED carrying HAProxy's [ALERT] lines (or the output tail if there are none).
 */
export async function checkConfig(haproxyBin: string, cfgPath: string, signal?: AbortSignal): Promise<void> {
  const result = await run(haproxyBin, ['-c', '-f', cfgPath], CHECK_TIMEOUT_MS, 'HAPROXY_CONFIG_REJECTED', signal);
  if (result.code === 0) return;
  const lines = `${result.stderr}\n${result.stdout}`
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l !== '');
  const alerts = lines.filter((l) => l.startsWith('[ALERT]'));
  const detail = (alerts.length > 0 ? alerts : lines.slice(-TAIL_LINES)).join('\n');
  throw new HaproxyConnectError('HAPROXY_CONFIG_REJECTED', `haproxy -c rejected ${cfgPath} (exit code ${result.code}):\n${detail}`);
}

/** The oldest HAProxy haproxy-connect runs on: dynamic servers, runtime certificate updates and SPOP 2.0 as 2.6 has them. */
export const MIN_HAPROXY_VERSION = '2.6';

/**
 * Runs `haproxy -v` and returns the numeric version, e.g. '2.6.12' from '2.6.12-1+deb12u4'. A
 * version older than MIN_HAPROXY_VERSION is refused with HAPROXY_UNSUPPORTED naming it.
 */
export async function haproxyVersion(haproxyBin: string, signal?: AbortSignal): Promise<string> {
  const result = await run(haproxyBin, ['-v'], VERSION_TIMEOUT_MS, 'HAPROXY_NOT_FOUND', signal);
  const version = parseHaproxyVersion(result.stdout);
  if (result.code !== 0 || version === undefined) {
    throw new HaproxyConnectError('HAPROXY_NOT_FOUND', `'${haproxyBin} -v' (exit code ${result.code}) printed no HAProxy version: ${JSON.stringify(result.stdout.slice(0, 200))}`);
  }
  if (compareVersions(version, MIN_HAPROXY_VERSION) < 0) {
    throw new HaproxyConnectError('HAPROXY_UNSUPPORTED', `haproxy binary '${haproxyBin}' is HAProxy ${version}; haproxy-connect needs ${MIN_HAPROXY_VERSION} or later`);
  }
  return version;
}

/** Extracts 'X.Y[.Z]' from `haproxy -v` output ('HAProxy version 2.6.12-1+deb12u4 ...'). */
export function parseHaproxyVersion(output: string): string | undefined {
  const m = /HA-?Proxy version (\d+\.\d+(?:\.\d+)?)/i.exec(output);
  return m?.[1];
}

/**
 * Compares dotted versions numerically, part by part ('3.0' > '2.10' > '2.9'); missing parts
 * count as 0. Returns a negative number, 0 or a positive number like a sort comparator.
 */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((p) => Number.parseInt(p, 10));
  const pb = b.split('.').map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (Number.isNaN(x) || Number.isNaN(y)) {
      throw new HaproxyConnectError('CONFIG_INVALID', `Cannot compare versions '${a}' and '${b}': not numeric`);
    }
    if (x !== y) return x - y;
  }
  return 0;
}
