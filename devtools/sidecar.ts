/**
 * Runs haproxy-connect as a real child process (from source through tsx, or the built dist/cli.js
 * with HAPROXY_CONNECT_DIST=1) and collects its JSON log lines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { REPO_ROOT } from './consul-dev-agent.js';
import { killOnExit } from './children.js';
import { daemonNode } from './daemon-node.js';
import { waitFor } from './ports.js';
import { DATAPLANEAPI_BIN, dataplaneArgs, haproxyBinArgs } from './haproxy-bin.js';

export class SidecarProcess {
  readonly process: ChildProcess;
  readonly logs: Array<Record<string, unknown>> = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], env: Record<string, string | undefined> = {}) {
    const useDist = process.env.HAPROXY_CONNECT_DIST === '1';
    const command = useDist ? [join(REPO_ROOT, 'dist/cli.js')] : ['--import', 'tsx', join(REPO_ROOT, 'src/cli.ts')];
    // HAPROXY_BIN, unless the caller names a binary itself (a test of a missing one).
    const binary = [...(args.some((a) => /^--?haproxy(=|$)/.test(a)) ? [] : haproxyBinArgs()), ...(args.some((a) => /^--?dataplane(=|$)/.test(a)) ? [] : dataplaneArgs())];
    // The bin's own Node flags and environment (its shebang line), as users run it.
    const node = daemonNode();
    this.process = spawn(process.execPath, [...node.args, ...command, ...binary, ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...node.env, ...env },
    });
    killOnExit(this.process, 'SIGTERM');
    let partial = '';
    this.process.stdout?.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        try {
          this.logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.logs.push({ raw: line });
        }
      }
    });
    this.process.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-20_000);
    });
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  find(msg: string): Record<string, unknown> | undefined {
    return this.logs.find((l) => l.msg === msg);
  }

  async waitForLog(msg: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    return waitFor(
      `log line '${msg}' (stderr: ${this.stderr.slice(-500)})`,
      async () => {
        if (this.process.exitCode !== null) throw new Error(`haproxy-connect exited with ${this.process.exitCode}: ${this.stderr}`);
        return this.find(msg);
      },
      timeoutMs,
    );
  }

  /** SIGTERM, then SIGKILL if it does not exit within the timeout. */
  async stop(timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), timeoutMs);
      const result = await this.exited;
      clearTimeout(timer);
      return result;
    }
    return this.exited;
  }
}

/**
 * Starts haproxy-connect for `service` against `httpAddr`, adds it to `into` (a list, or a map by
 * service), and waits until it is ready.
 */
export async function startReadySidecar(
  into: SidecarProcess[] | Map<string, SidecarProcess>,
  service: string,
  httpAddr: string,
  baseDir: string,
  extra: readonly string[] = [],
): Promise<SidecarProcess> {
  const sidecar = new SidecarProcess(['-sidecar-for', service, '-http-addr', httpAddr, '-haproxy-cfg-base-path', baseDir, '-log-level', 'debug', ...extra]);
  if (into instanceof Map) into.set(service, sidecar);
  else into.push(sidecar);
  await sidecar.waitForLog('sidecar ready');
  return sidecar;
}

/** The sidecar among `sidecars` that serves `service` (by the proxy ID it logged). */
export function sidecarServing(sidecars: readonly SidecarProcess[], service: string): SidecarProcess {
  const sidecar = sidecars.find((s) => s.logs.some((l) => l.proxyId === `${service}-sidecar-proxy`));
  if (sidecar === undefined) throw new Error(`no sidecar for ${service}`);
  return sidecar;
}

/** A `# ...` line in the test output: what a test measured. */
export function note(line: string): void {
  process.stdout.write(`# ${line}\n`);
}

/** Whole milliseconds since `t` (a performance.now() value). */
export function msSince(t: number): number {
  return Math.round(performance.now() - t);
}

/**
 * Whether the last change `logs` (from `mark` on) shows is live: a runtime batch or a reload
 * finished after the mark, and no batch or reload is still under way (the daemon runs with
 * `-log-level debug`, which logs a batch's start). A test that reads haproxy.cfg to know
 * a change was applied also asks this: with the Data Plane API driver the API writes the file in the
 * middle of a runtime batch (a spare slot's address before it leaves maintenance).
 */
export function lastChangeLive(logs: ReadonlyArray<Record<string, unknown>>, mark = 0): boolean {
  // The native driver writes haproxy.cfg only once a change is live.
  if (DATAPLANEAPI_BIN === undefined) return true;
  const since = logs.slice(mark);
  const started = new Set(['reloading haproxy', 'applying runtime changes']);
  const last = since.findLastIndex((l) => started.has(String(l.msg)) || l.msg === 'haproxy reloaded' || l.msg === 'applied runtime changes');
  return last >= 0 && !started.has(String(since[last]?.msg));
}
