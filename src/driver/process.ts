/**
 * The HAProxy master-worker supervisor: starts `haproxy -W -S <master socket> -f <cfg>` as our
 * child, reloads it through the master CLI, stops it without leaving a process behind, and reports
 * a master that died on its own (`crashed`, once its workers are reaped).
 *
 *   stopped → starting → running → reloading → running … → stopping → stopped
 *   running|reloading → crashed → starting (start() again) | stopped
 *
 * Every transition is checked against TRANSITIONS and logged as `OLD -> NEW`. Policy lives with
 * the reconcile loop: when to reload, and whether and when to restart after a crash
 * (src/reconcile/restart-policy.ts). This module only carries it out.
 *
 * The master runs in its own session (spawn `detached`): a Ctrl-C on our terminal reaches only us,
 * so shutdown happens in our order; a `process.on('exit')` hook hard-stops the group if we die
 * without calling stop(). After a SIGKILL nothing of ours runs: the next daemon for the proxy stops
 * what was left (src/driver/orphans.ts, told of each master through onSpawn). Measured on
 * 2.6.12: workers exit by themselves when the master dies.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { EventEmitter } from 'node:events';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { type ExitInfo, type Run, spawnMaster, waitExit } from './master-child.js';
import { parseReloadAnswer, parseShowProc, reloadOutcome, sendCommand, type ShowProc } from './master-cli.js';
import { HaproxyOutput, type ProcessLogger } from './haproxy-output.js';
import { signalPid } from './pids.js';
import { POLL_INTERVAL_MS, SIGKILL_WAIT_MS, reapWorkers } from './reap.js';

/** How long start() waits for the master CLI to list a worker. */
export const DEFAULT_READY_TIMEOUT_MS = 10_000;
/** How long reload() waits for a new worker generation (FACTS §3: ~60–170 ms measured). */
export const DEFAULT_RELOAD_TIMEOUT_MS = 10_000;
/** Soft stop (SIGUSR1: finish connections) gets this long before SIGTERM. */
export const DEFAULT_KILL_TIMEOUT_MS = 10_000;
/** After SIGTERM (hard stop of the workers), wait this long before SIGKILL of the whole group. */
const TERM_TIMEOUT_MS = 3_000;
/** Bound for one master CLI command. */
const CLI_TIMEOUT_MS = 2_000;

import type { ProcessState } from '../domain/haproxy.js';

export type { ProcessState } from '../domain/haproxy.js';

const TRANSITIONS: Readonly<Record<ProcessState, readonly ProcessState[]>> = {
  stopped: ['starting'],
  starting: ['running', 'stopping', 'stopped', 'crashed'],
  running: ['reloading', 'stopping', 'crashed'],
  reloading: ['running', 'stopping', 'crashed'],
  crashed: ['starting', 'stopping', 'stopped'],
  stopping: ['stopped'],
};

export type { ProcessLogger } from './haproxy-output.js';

export interface HaproxyProcessOptions {
  haproxyBin: string;
  /** Working directory of HAProxy (relative paths in the config resolve here). */
  runDir: string;
  cfgPath: string;
  /** Path of the master CLI unix socket; created by HAProxy with mode 600. */
  masterSocket: string;
  logger: ProcessLogger;
  killTimeoutMs?: number;
  readyTimeoutMs?: number;
  reloadTimeoutMs?: number;
  /** Called with the pid of every master spawned (the first start and each restart). */
  onSpawn?: (pid: number) => void;
}

export class HaproxyProcess extends EventEmitter {
  readonly #opts: Required<Omit<HaproxyProcessOptions, 'onSpawn'>> & Pick<HaproxyProcessOptions, 'onSpawn'>;
  readonly #log: ProcessLogger;
  #state: ProcessState = 'stopped';
  #run: Run | undefined;
  #stopping: Promise<void> | undefined;
  /** The spawn-and-wait-for-ready in flight; stop() waits for it to notice and clean up. */
  #launching: Promise<void> | undefined;
  #runningSince = 0;
  readonly #output: HaproxyOutput;
  readonly #exitHook = (): void => {
    const run = this.#run;
    if (run && !run.exitInfo) {
      // Last resort when our process exits without stop(): hard stop of master and workers.
      try {
        process.kill(-run.pid, 'SIGTERM');
      } catch {
        // Already gone: nothing to clean up.
      }
    }
  };

  constructor(options: HaproxyProcessOptions) {
    super();
    this.#opts = {
      killTimeoutMs: DEFAULT_KILL_TIMEOUT_MS,
      readyTimeoutMs: DEFAULT_READY_TIMEOUT_MS,
      reloadTimeoutMs: DEFAULT_RELOAD_TIMEOUT_MS,
      ...options,
    };
    this.#log = options.logger;
    this.#output = new HaproxyOutput(options.logger);
  }

  get state(): ProcessState {
    return this.#state;
  }

  /** Pid of the master while one is running. */
  get pid(): number | undefined {
    return this.#run && !this.#run.exitInfo ? this.#run.pid : undefined;
  }

  /** Asks the master which workers exist (current generation first, then old ones still draining). */
  async showProc(signal?: AbortSignal): Promise<ShowProc> {
    const text = await sendCommand(this.#opts.masterSocket, 'show proc', { timeoutMs: CLI_TIMEOUT_MS, signal });
    const proc = parseShowProc(text);
    if (this.#run && proc.master.pid === this.#run.pid) {
      for (const w of proc.workers) this.#run.workerPids.add(w.pid);
    }
    return proc;
  }

  /** Pids of all workers (current and old) the master reports. */
  async workerPids(): Promise<number[]> {
    return (await this.showProc()).workers.map((w) => w.pid);
  }

  /** Starts the master (from `stopped`, or again after a crash); a failed start after a crash stays `crashed`. */
  async start(): Promise<void> {
    if (this.#is('running')) return;
    if (!this.#is('stopped') && !this.#is('crashed')) {
      throw new HaproxyConnectError('HAPROXY_START_FAILED', `Cannot start haproxy while it is ${this.#state}`);
    }
    const from = this.#state;
    this.#transition('starting');
    try {
      await this.#launch();
    } catch (err) {
      if (this.#is('starting')) this.#transition(from);
      throw err;
    }
    this.#transition('running');
  }

  /**
   * Hitless reload through the master CLI. The caller has run checkConfig on the new file. Resolves
   * when a new worker generation runs; throws HAPROXY_RELOAD_FAILED if the master reports a failed
   * reload (the old worker keeps serving) or no new worker appears in time. `trigger`, when given,
   * asks for the reload another way (the Data Plane API runs its reload command) instead of the
   * master CLI's `reload`; the new worker is confirmed the same way.
   */
  async reload(trigger?: () => Promise<void>): Promise<void> {
    if (!this.#is('running')) {
      throw new HaproxyConnectError('HAPROXY_RELOAD_FAILED', `Cannot reload haproxy while it is ${this.#state}`);
    }
    this.#transition('reloading');
    const startSeq = this.#output.mark;
    const failed = (message: string, cause?: unknown, answerLog: readonly string[] = []): HaproxyConnectError => {
      let alerts = this.#output.since(startSeq).filter((l) => l.startsWith('[ALERT]'));
      if (alerts.length === 0) alerts = answerLog.filter((l) => l.startsWith('[ALERT]'));
      const detail = alerts.length > 0 ? `:\n${alerts.join('\n')}` : '';
      if (this.#is('reloading')) this.#transition('running');
      return new HaproxyConnectError('HAPROXY_RELOAD_FAILED', `${message}${detail}`, { cause });
    };

    let before: ShowProc;
    let answer: ReturnType<typeof parseReloadAnswer>;
    const deadline = Date.now() + this.#opts.reloadTimeoutMs;
    try {
      before = await this.showProc();
      // 2.6 answers nothing to `reload` and closes (FACTS §2); 3.0 answers `Success=0|1` only once
      // the new worker is ready (seconds for a large config), so wait as long as for the reload.
      // Either way the new worker is confirmed from `show proc`.
      if (trigger === undefined) answer = parseReloadAnswer(await sendCommand(this.#opts.masterSocket, 'reload', { timeoutMs: this.#opts.reloadTimeoutMs }));
      else {
        await trigger();
        answer = undefined;
      }
    } catch (err) {
      // What the trigger knows better than a reload failure (a refused or unwritable configuration) keeps its code.
      if (err instanceof HaproxyConnectError && (err.code === 'HAPROXY_CONFIG_REJECTED' || err.code === 'FILE_WRITE_FAILED')) {
        if (this.#is('reloading')) this.#transition('running');
        throw err;
      }
      throw failed(`Cannot reload haproxy with ${this.#opts.cfgPath}: ${errorMessage(err)}`, err);
    }
    if (answer?.success === false) {
      throw failed(`haproxy rejected the reload of ${this.#opts.cfgPath}; the old worker keeps serving`, undefined, answer.log);
    }
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (!this.#is('reloading')) {
        throw new HaproxyConnectError('HAPROXY_RELOAD_FAILED', `haproxy reload of ${this.#opts.cfgPath} interrupted: the supervisor is now ${this.#state}`);
      }
      try {
        const outcome = reloadOutcome(before, await this.showProc());
        if (outcome.kind === 'rejected') {
          throw failed(`haproxy rejected the reload of ${this.#opts.cfgPath} (failed reloads: ${outcome.failedReloads}); the old worker keeps serving`);
        }
        if (outcome.kind === 'no-new-worker') {
          throw failed(`haproxy reloaded ${this.#opts.cfgPath} but forked no new worker; the old worker keeps serving`);
        }
        if (outcome.kind === 'reloaded') {
          this.#log.info({ component: 'haproxy-process', workers: outcome.workers, reloads: outcome.reloads }, 'haproxy reloaded');
          this.#transition('running');
          return;
        }
      } catch (err) {
        if (err instanceof HaproxyConnectError && err.code === 'HAPROXY_RELOAD_FAILED') throw err;
        lastError = err; // the master is re-executing itself: its socket may not answer for a moment
      }
      await delay(POLL_INTERVAL_MS);
    }
    const why = lastError === undefined ? '' : ` (last error: ${errorMessage(lastError)})`;
    throw failed(`haproxy did not report a new worker within ${this.#opts.reloadTimeoutMs} ms after reloading ${this.#opts.cfgPath}${why}`);
  }

  /**
   * Soft stop (SIGUSR1: workers finish their connections), escalating to SIGTERM after the kill
   * timeout and SIGKILL of the process group after that. Resolves when master and workers are gone.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop().finally(() => {
      this.#stopping = undefined;
    });
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (this.#is('stopped')) return;
    const run = this.#run;
    if (this.#is('crashed') && (!run || run.exitInfo) && !this.#launching) {
      this.#transition('stopped');
      return;
    }
    this.#transition('stopping');
    await this.#launching?.catch(() => undefined);
    const current = this.#run;
    if (current) await this.#terminate(current);
    this.#transition('stopped');
  }

  /** A method, not a comparison, because awaits in between change the state behind TS's narrowing. */
  #is(state: ProcessState): boolean {
    return this.#state === state;
  }

  #transition(to: ProcessState): void {
    const from = this.#state;
    if (!TRANSITIONS[from].includes(to)) {
      throw new Error(`haproxy supervisor: illegal state transition ${from} -> ${to}`);
    }
    this.#state = to;
    this.#log.info({ component: 'haproxy-process', from, to, pid: this.pid }, `${from} -> ${to}`);
    this.emit('state', { from, to });
  }

  async #spawn(): Promise<Run> {
    const { haproxyBin, masterSocket, cfgPath, runDir } = this.#opts;
    const run = await spawnMaster({
      haproxyBin,
      args: ['-W', '-S', `${masterSocket},mode,600`, '-f', cfgPath],
      cwd: runDir,
      onLine: (pid, stream, line) => this.#output.line(pid, stream, line),
      onError: (pid, err) => this.#log.error({ component: 'haproxy-process', pid, err: errorMessage(err) }, 'haproxy child process error'),
      onExit: (exitedRun, info) => this.#onExit(exitedRun, info),
    });
    process.on('exit', this.#exitHook);
    try {
      this.#opts.onSpawn?.(run.pid);
    } catch (err) {
      this.#log.error({ component: 'haproxy-process', pid: run.pid, err: errorMessage(err) }, 'onSpawn callback threw');
    }
    return run;
  }

  /** Spawns the master and waits until the master CLI lists a current worker. */
  #launch(): Promise<void> {
    const launching = this.#launchOnce().finally(() => {
      if (this.#launching === launching) this.#launching = undefined;
    });
    this.#launching = launching;
    return launching;
  }

  async #launchOnce(): Promise<void> {
    const startSeq = this.#output.mark;
    const run = await this.#spawn();
    this.#run = run;
    const deadline = Date.now() + this.#opts.readyTimeoutMs;
    while (true) {
      if (run.exitInfo) {
        await run.drained;
        const tail = this.#output.since(startSeq).slice(-10).join('\n');
        throw new HaproxyConnectError(
          'HAPROXY_START_FAILED',
          `haproxy with ${this.#opts.cfgPath} exited during startup (code ${run.exitInfo.code}, signal ${run.exitInfo.signal})${tail ? `:\n${tail}` : ''}`,
        );
      }
      if (!this.#is('starting')) {
        await this.#terminate(run);
        throw new HaproxyConnectError('ABORTED', `haproxy startup interrupted: the supervisor is now ${this.#state}`);
      }
      try {
        const proc = await this.showProc();
        if (proc.master.pid === run.pid && proc.workers.some((w) => !w.old)) {
          this.#runningSince = Date.now();
          return;
        }
      } catch {
        // Not listening yet: keep polling until the deadline.
      }
      if (Date.now() >= deadline) {
        this.#log.error({ component: 'haproxy-process', pid: run.pid }, 'haproxy not ready in time; stopping it');
        await this.#terminate(run);
        throw new HaproxyConnectError('HAPROXY_START_FAILED', `haproxy with ${this.#opts.cfgPath} did not report a worker on ${this.#opts.masterSocket} within ${this.#opts.readyTimeoutMs} ms`);
      }
      await waitExit(run, POLL_INTERVAL_MS);
    }
  }

  #onExit(run: Run, info: ExitInfo): void {
    process.removeListener('exit', this.#exitHook);
    if (run !== this.#run) return;
    const unexpected = this.#is('running') || this.#is('reloading');
    this.emit('exit', { ...info, pid: run.pid, expected: !unexpected });
    if (!unexpected) return; // stop() or #launch() is waiting on this exit and handles it
    this.#log.error({ component: 'haproxy-process', pid: run.pid, ...info }, 'haproxy master exited unexpectedly');
    this.#transition('crashed');
    const crash = { pid: run.pid, ...info, ranForMs: Date.now() - this.#runningSince };
    // Workers normally follow their master out; make sure none is left serving an old config,
    // then report the crash to whoever decides about restarting (still crashed: nobody stopped us).
    void this.#reapWorkers(run).then(() => {
      if (this.#is('crashed') && this.#run === run) this.emit('crashed', crash);
    });
  }

  /** Signals the master with escalation, then makes sure its workers are gone too. */
  async #terminate(run: Run): Promise<void> {
    const log = { component: 'haproxy-process', pid: run.pid };
    if (!run.exitInfo) {
      await this.showProc().catch(() => undefined); // learn the current worker pids
      signalPid(run.pid, 'SIGUSR1');
      if (!(await waitExit(run, this.#opts.killTimeoutMs))) {
        this.#log.warn({ ...log, timeoutMs: this.#opts.killTimeoutMs }, 'haproxy soft stop timed out; sending SIGTERM');
        signalPid(run.pid, 'SIGTERM');
        if (!(await waitExit(run, TERM_TIMEOUT_MS))) {
          this.#log.warn({ ...log, timeoutMs: TERM_TIMEOUT_MS }, 'haproxy hard stop timed out; sending SIGKILL to its process group');
          // The master is alive, so its process group (pgid = its pid) is certainly ours.
          signalPid(-run.pid, 'SIGKILL');
          await waitExit(run, SIGKILL_WAIT_MS);
        }
      }
    }
    await this.#reapWorkers(run);
  }

  async #reapWorkers(run: Run): Promise<void> {
    await reapWorkers(run.workerPids, run.pid, this.#log);
  }
}
