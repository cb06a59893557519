/**
 * One haproxy-connect run in this process against an in-process fake Consul agent, for the scale
 * cases: only haproxy-connect and HAProxy are measured. Its log lines are kept with the time they
 * arrived, so a case times a change from the moment it set it to the line that says it is live.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { parseShowProc, sendCommand } from '../../src/driver/master-cli.js';
import { MASTER_SOCKET, run as runSidecar } from '../../src/main.js';
import { createLogger } from '../../src/logger.js';
import { webSidecarConfig } from '../../test/helpers/fake-web-agent.js';
import { rssKiB } from '../lib/proc-stats.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

/** Log levels quoted when a change does not go live in time, and how many of those lines. */
const PROBLEM_LEVELS: ReadonlySet<string> = new Set(['warn', 'error', 'fatal']);
const PROBLEMS_QUOTED = 3;

/** A parsed log line and `performance.now()` when it was written. */
export type TimedLine = Record<string, unknown> & { at: number };

export interface InProcessSidecar {
  readonly lines: readonly TimedLine[];
  /** The first line with message `msg` written after `since` (performance.now()). */
  after(msg: string, since: number): TimedLine | undefined;
  /** `pending`, whose error (a timeout) also quotes the sidecar's last warnings and errors: what held the change up. */
  explain<T>(pending: Promise<T>): Promise<T>;
  /** RSS of the HAProxy master and its current workers, in MiB. */
  haproxyRssMiB(): Promise<number>;
  /** Stops the sidecar and removes its directory; `log` hears a failure of the run. */
  stop(log: (line: string) => void): Promise<void>;
}

/**
 * Starts the `web` sidecar of the fake agent `consul`, with its run directory under a new temp dir
 * named `prefix`; with `dataplaneBin` (a dataplane run, ControlPlaneContext) through the Data Plane API driver.
 */
export async function startInProcessSidecar(consul: FakeConsulAgentApi, prefix: string, dataplaneBin?: string): Promise<InProcessSidecar> {
  const base = await mkdtemp(join(tmpdir(), prefix));
  const lines: TimedLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push({ ...(JSON.parse(l) as object), at: performance.now() });
      cb();
    },
  });
  const shutdown = new AbortController();
  const done = runSidecar(webSidecarConfig(consul, base, { haproxyBin: HAPROXY_BIN, logLevel: 'info', ...(dataplaneBin !== undefined && { dataplaneBin }) }), shutdown.signal, {
    logger: createLogger('info', sink),
    consul,
  });
  return {
    lines,
    after: (msg, since) => lines.find((l) => l.msg === msg && l.at > since),
    explain: (pending) =>
      pending.catch((err: unknown) => {
        const problems = lines
          .filter((l) => PROBLEM_LEVELS.has(String(l.level)))
          .slice(-PROBLEMS_QUOTED)
          .map((l) => `${String(l.msg)}${l.err === undefined ? '' : `: ${String(l.err)}`}`);
        throw new Error(`${err instanceof Error ? err.message : String(err)}; the sidecar's last warnings and errors: ${problems.length === 0 ? '(none)' : problems.join(' | ')}`, { cause: err });
      }),
    async haproxyRssMiB() {
      const runDir = lines.find((l) => l.msg === 'created run directory')?.runDir as string;
      const procs = parseShowProc(await sendCommand(join(runDir, MASTER_SOCKET), 'show proc', { timeoutMs: 5_000 }));
      return [procs.master.pid, ...procs.workers.filter((w) => !w.old).map((w) => w.pid)].reduce((sum, p) => sum + rssKiB(p), 0) / 1024;
    },
    async stop(log) {
      shutdown.abort(new Error('bench case done'));
      await done.catch((err: unknown) => log(`sidecar: ${String(err)}`));
      await rm(base, { recursive: true, force: true });
    },
  };
}
