/**
 * A one-shot client for HAProxy's unix-socket command interfaces (the master CLI and the runtime
 * API), plus the parser for the master's `show proc` answer.
 *
 * Measured on 2.6.12: in non-interactive mode the peer answers one command and closes, but only
 * after it has seen our half-close — a socket that writes `command\n` and keeps its write side
 * open gets the answer and then waits forever. So we write the command and end() our side.
 */
import net from 'node:net';
import { HaproxyConnectError, errorMessage } from '../errors.js';

/** Default bound for one command round trip. */
export const DEFAULT_CLI_TIMEOUT_MS = 5_000;
/** Answers larger than this are refused: `show proc` is tiny; this only guards against a runaway peer. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

export interface SendCommandOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Sends one command and resolves with everything the peer wrote before closing.
 * Errors (connect failure, timeout, abort, oversized answer) → HAPROXY_CLI naming socket and command.
 */
export function sendCommand(socketPath: string, command: string, options: SendCommandOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_CLI_TIMEOUT_MS;
  const { signal } = options;
  const what = `command '${command}' on socket ${socketPath}`;
  if (command.includes('\n')) {
    return Promise.reject(new HaproxyConnectError('HAPROXY_CLI', `Refusing ${what}: it contains a newline`));
  }
  if (signal?.aborted) {
    return Promise.reject(new HaproxyConnectError('ABORTED', `${what} cancelled`, { cause: signal.reason }));
  }
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const socket = net.connect(socketPath);

    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onAbort = (): void => finish(new HaproxyConnectError('ABORTED', `${what} cancelled`, { cause: signal?.reason }));
    const timer = setTimeout(() => finish(new HaproxyConnectError('HAPROXY_CLI', `${what} got no complete answer within ${timeoutMs} ms`)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.on('connect', () => socket.end(`${command}\n`));
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ANSWER_BYTES) {
        finish(new HaproxyConnectError('HAPROXY_CLI', `${what} answered more than ${MAX_ANSWER_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    socket.on('error', (err) => finish(new HaproxyConnectError('HAPROXY_CLI', `${what} failed: ${errorMessage(err)}`, { cause: err })));
    socket.on('close', () => finish(undefined));
  });
}

export interface ProcEntry {
  pid: number;
  /** How many reloads this process has survived (for the master: how many it has performed). */
  reloads: number;
  /** As printed, e.g. `0d00h02m07s`. */
  uptime: string;
  version: string;
}

export interface MasterProc extends ProcEntry {
  /**
   * Failed reloads since the master started (2.6.12 prints `<reloads> [failed: N]`).
   * Undefined when the version does not print it.
   */
  failedReloads: number | undefined;
}

export interface WorkerProc extends ProcEntry {
  /** True for a worker of an earlier generation that is still finishing connections. */
  old: boolean;
}

export interface ShowProc {
  master: MasterProc;
  /** Current workers first, then old workers. */
  workers: WorkerProc[];
}

/**
 * Parses the master's `show proc` answer. The 2.6.12 format, measured:
 *
 *   #<PID>          <type>          <reloads>       <uptime>        <version>
 *   6489            master          2 [failed: 1]   0d00h10m18s     2.6.12-1+deb12u4
 *   # workers
 *   15090           worker          1               0d00h00m02s     2.6.12-1+deb12u4
 *   # old workers
 *   ...
 *   # programs
 *
 * What a failed reload looks like on 2.6.12 (measured by reloading onto a config with a syntax
 * error): the master's reload counter still goes up, `[failed: N]` goes up by one, the surviving
 * worker stays under `# workers` with its own reload counter incremented, and the `prompt` command
 * shows `master[ReloadFailed]>`. Whether a later successful reload resets `[failed: N]` to 0 was
 * measured both ways on 2.6.12 (kept after a CLI reload in one run, reset after SIGUSR2 and CLI
 * reloads in another), so the caller only asks whether it went up across one reload.
 */
export function parseShowProc(text: string): ShowProc {
  let master: MasterProc | undefined;
  const workers: WorkerProc[] = [];
  let section: 'head' | 'workers' | 'old workers' | 'programs' | 'other' = 'head';
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#<PID>')) continue;
    if (line.startsWith('#')) {
      const name = line.slice(1).trim();
      section = name === 'workers' || name === 'old workers' || name === 'programs' ? name : 'other';
      continue;
    }
    const m = /^(\d+)\s+(\S+)\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?\s+(\S+)\s+(\S+)/.exec(line);
    if (!m) {
      throw new HaproxyConnectError('HAPROXY_CLI', `Unexpected line in 'show proc' answer: ${JSON.stringify(rawLine)}`);
    }
    const [, pid, type, reloads, failed, uptime, version] = m as unknown as [string, string, string, string, string | undefined, string, string];
    const entry: ProcEntry = { pid: Number(pid), reloads: Number(reloads), uptime, version };
    if (type === 'master') {
      master = { ...entry, failedReloads: failed === undefined ? undefined : Number(failed) };
    } else if (type === 'worker' && (section === 'workers' || section === 'old workers')) {
      workers.push({ ...entry, old: section === 'old workers' });
    }
    // Programs (and anything in an unknown section) are not ours to supervise.
  }
  if (!master) {
    throw new HaproxyConnectError('HAPROXY_CLI', `No master line in 'show proc' answer: ${JSON.stringify(text.slice(0, 200))}`);
  }
  workers.sort((a, b) => Number(a.old) - Number(b.old));
  return { master, workers };
}

/**
 * The master's answer to `reload`. 2.6.12 answers nothing and closes at once (undefined here).
 * 3.0.11 (measured) answers only when the reload is over: `Success=1` or `Success=0`, a `--` line,
 * then the new master's startup log ([NOTICE]/[WARNING]/[ALERT] lines, e.g. why the new config was
 * refused); a failed reload still leaves the old worker serving.
 */
export function parseReloadAnswer(text: string): { success: boolean; log: string[] } | undefined {
  const m = /^Success=([01])\s*$/m.exec(text);
  if (!m) return undefined;
  const afterSeparator = text.slice(m.index).split('\n--\n')[1] ?? '';
  const log = afterSeparator
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l !== '');
  return { success: m[1] === '1', log };
}

/** What two `show proc` answers, before and after a `reload`, say about it. */
export type ReloadOutcome = { kind: 'pending' } | { kind: 'reloaded'; workers: number[]; reloads: number } | { kind: 'rejected'; failedReloads: number } | { kind: 'no-new-worker' };

/**
 * PURE. Pending until the master's reload counter moves; then rejected when `[failed: N]` went up
 * (the old worker keeps serving), reloaded when a worker that was not there before is current, and
 * no-new-worker when a version without `[failed: N]` moved its counter but forked nothing.
 */
export function reloadOutcome(before: ShowProc, now: ShowProc): ReloadOutcome {
  if (now.master.reloads <= before.master.reloads) return { kind: 'pending' };
  const failedBefore = before.master.failedReloads;
  const failedNow = now.master.failedReloads;
  if (failedBefore !== undefined && failedNow !== undefined && failedNow > failedBefore) return { kind: 'rejected', failedReloads: failedNow };
  const oldPids = new Set(before.workers.map((w) => w.pid));
  const fresh = now.workers.filter((w) => !w.old && !oldPids.has(w.pid));
  if (fresh.length > 0) return { kind: 'reloaded', workers: fresh.map((w) => w.pid), reloads: now.master.reloads };
  return failedNow === undefined ? { kind: 'no-new-worker' } : { kind: 'pending' };
}
