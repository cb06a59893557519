/**
 * The Data Plane API process next to HAProxy: configuration and credentials generated into the
 * run directory, started, checked for a version we can drive, and restarted with backoff when it
 * exits. HAProxy keeps serving while it is down; changes wait for it (`ready()`).
 *
 * The password is generated per run and written only into the 0600 configuration file: never into
 * an argument list, a log line or a metric.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { HaproxyConnectError, errorMessage, isHaproxyConnectError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  DATAPLANE_CONFIG_FILE,
  DATAPLANE_RELOAD_SCRIPT,
  DATAPLANE_SOCKET_FILE,
  DATAPLANE_USER,
  DATAPLANE_WORK_DIRS,
  type ApiVersion,
  checkApiVersion,
  parseApiVersion,
  renderApiConfig,
  renderReloadScript,
} from './api-config.js';
import { DataplaneClient, type DataplaneExchange } from './client.js';

/** How long a start may take until `/v2/info` answers. */
export const DATAPLANE_READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 50;
/** Restart backoff after an unexpected exit: doubled per failure, capped, reset after a start. */
export const DATAPLANE_RESTART_BASE_MS = 500;
export const DATAPLANE_RESTART_CAP_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
/** Lines of the API's own output kept for the error of a failed start. */
const OUTPUT_TAIL_LINES = 5;
const BOOTSTRAP_CONFIG = '# written by haproxy-connect; replaced through the Data Plane API at the first apply\nglobal\n';

export type ApiProcessState = 'stopped' | 'starting' | 'running' | 'restarting' | 'stopping';

export interface DataplaneApiProcessOptions {
  bin: string;
  runDir: string;
  haproxyBin: string;
  logger: Logger;
  onExchange?: (exchange: DataplaneExchange) => void;
}

export class DataplaneApiProcess {
  readonly #opts: DataplaneApiProcessOptions;
  readonly #password = randomBytes(24).toString('base64url');
  readonly client: DataplaneClient;
  #child: ChildProcess | undefined;
  #state: ApiProcessState = 'stopped';
  #version: ApiVersion | undefined;
  #failures = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #readyWaiters: Array<() => void> = [];
  #launching = false;
  #outputTail: string[] = [];
  #beforeHaproxy = true;
  /** Unexpected exits so far (metrics, tests). */
  restarts = 0;

  constructor(opts: DataplaneApiProcessOptions) {
    this.#opts = opts;
    this.client = new DataplaneClient({
      socketPath: join(opts.runDir, DATAPLANE_SOCKET_FILE),
      user: DATAPLANE_USER,
      password: this.#password,
      ...(opts.onExchange !== undefined && { onExchange: opts.onExchange }),
    });
  }

  get state(): ApiProcessState {
    return this.#state;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get version(): ApiVersion | undefined {
    return this.#version;
  }

  /** Writes the configuration, starts the API and waits for it; a version we cannot drive is fatal. */
  async start(): Promise<void> {
    if (this.#state !== 'stopped') return;
    const { runDir, haproxyBin } = this.#opts;
    const config = renderApiConfig({ runDir, haproxyBin, password: this.#password });
    for (const dir of DATAPLANE_WORK_DIRS) await mkdir(join(runDir, dir), { recursive: true, mode: 0o700 });
    const cfg = join(runDir, DATAPLANE_CONFIG_FILE);
    await writeFile(cfg, config, { mode: 0o600 });
    await chmod(cfg, 0o600);
    await writeFile(join(runDir, DATAPLANE_RELOAD_SCRIPT), renderReloadScript(runDir), { mode: 0o700 });
    // The API refuses to start without the configuration file; the first apply replaces this one.
    await writeFile(join(runDir, 'haproxy.cfg'), BOOTSTRAP_CONFIG, { mode: 0o600, flag: 'wx' }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    });
    this.#state = 'starting';
    try {
      await this.#launch();
    } catch (err) {
      await this.#kill();
      this.#state = 'stopped';
      throw err;
    }
  }

  /**
   * True while the running API was started before HAProxy first ran: its runtime client is not set
   * up (it reads the stats socket from the configuration at its start).
   */
  get startedBeforeHaproxy(): boolean {
    return this.#beforeHaproxy;
  }

  /** Stops and starts the API again (same credentials and socket); HAProxy is not touched. */
  async restart(signal?: AbortSignal): Promise<void> {
    if (this.#state !== 'running') return this.ready(signal);
    this.#state = 'starting';
    await this.#kill();
    this.#beforeHaproxy = false;
    try {
      await this.#launch();
    } catch (err) {
      await this.#kill();
      this.#state = 'stopped';
      this.#wake();
      throw err;
    }
  }

  /** Resolves when the API answers (at once while it runs); rejects when `signal` aborts or it is stopped. */
  ready(signal?: AbortSignal): Promise<void> {
    if (this.#state === 'running') return Promise.resolve();
    if (this.#state === 'stopped' || this.#state === 'stopping') {
      return Promise.reject(new HaproxyConnectError('DATAPLANE_API', `The Data Plane API ${this.#opts.bin} is ${this.#state}`));
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#readyWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        if (this.#state === 'running') resolve();
        else reject(new HaproxyConnectError('DATAPLANE_API', `The Data Plane API ${this.#opts.bin} is ${this.#state}`));
      });
    });
  }

  async stop(): Promise<void> {
    clearTimeout(this.#restartTimer);
    this.#state = 'stopping';
    this.#wake();
    await this.#kill();
    this.client.close();
    await rm(join(this.#opts.runDir, DATAPLANE_SOCKET_FILE), { force: true });
    this.#state = 'stopped';
  }

  async #launch(): Promise<void> {
    this.#launching = true;
    try {
      await this.#launchOnce();
    } finally {
      this.#launching = false;
    }
  }

  async #launchOnce(): Promise<void> {
    const { bin, runDir, logger } = this.#opts;
    // A killed API leaves its socket behind and then refuses to bind it (measured on v2.9.27).
    await rm(join(runDir, DATAPLANE_SOCKET_FILE), { force: true });
    const child = spawn(bin, ['-f', join(runDir, DATAPLANE_CONFIG_FILE)], { cwd: runDir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on('line', (raw) => {
        const line = raw.split(this.#password).join('***');
        this.#outputTail = [...this.#outputTail.slice(1 - OUTPUT_TAIL_LINES), line];
        logger.debug({ component: 'dataplaneapi', pid: child.pid, line }, 'dataplaneapi output');
      });
    }
    child.once('exit', (code, sig) => this.#onExit(child, code, sig));
    await spawned.catch((err: unknown) => {
      throw new HaproxyConnectError('DATAPLANE_API', `Cannot start the Data Plane API ${bin}: ${errorMessage(err)}`, { cause: err });
    });
    const deadline = Date.now() + DATAPLANE_READY_TIMEOUT_MS;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        await delay(READY_POLL_MS); // its last lines
        throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API ${bin} exited during startup (code ${child.exitCode}, signal ${child.signalCode}):\n${this.#outputTail.join('\n')}`);
      }
      try {
        const answer = await this.client.send({ method: 'GET', path: '/info' });
        if (answer.status === 200) {
          const version = parseApiVersion(readApiVersion(answer.body, bin), bin);
          checkApiVersion(version, bin);
          this.#version = version;
          this.#state = 'running';
          this.#failures = 0;
          logger.info({ component: 'dataplaneapi', pid: child.pid, version: version.text }, 'the Data Plane API is running');
          this.#wake();
          return;
        }
        lastError = new Error(`GET /v2/info answered ${answer.status}`);
      } catch (err) {
        if (isHaproxyConnectError(err, 'DATAPLANE_UNSUPPORTED')) throw err;
        if (isHaproxyConnectError(err, 'DATAPLANE_API') && /\(401\)/.test(err.message)) throw err;
        lastError = err;
      }
      await delay(READY_POLL_MS);
    }
    throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API ${bin} did not answer within ${DATAPLANE_READY_TIMEOUT_MS} ms: ${errorMessage(lastError)}`);
  }

  #onExit(child: ChildProcess, code: number | null, sig: NodeJS.Signals | null): void {
    if (child !== this.#child) return;
    this.#child = undefined;
    // An exit during a start is the start's failure, handled by whoever started it.
    if (this.#launching || this.#state === 'stopping' || this.#state === 'stopped' || this.#state === 'starting') return;
    this.restarts++;
    this.#failures++;
    const wait = Math.min(DATAPLANE_RESTART_CAP_MS, DATAPLANE_RESTART_BASE_MS * 2 ** (this.#failures - 1));
    this.#opts.logger.warn({ component: 'dataplaneapi', code, signal: sig, restartInMs: wait }, 'the Data Plane API exited; HAProxy keeps serving; restarting it');
    this.#state = 'restarting';
    this.#restartTimer = setTimeout(() => void this.#restart(), wait);
  }

  async #restart(): Promise<void> {
    if (this.#state !== 'restarting') return;
    try {
      await this.#launch();
    } catch (err) {
      await this.#kill();
      if (this.#state !== 'restarting') return;
      this.#failures++;
      const wait = Math.min(DATAPLANE_RESTART_CAP_MS, DATAPLANE_RESTART_BASE_MS * 2 ** (this.#failures - 1));
      this.#opts.logger.error({ component: 'dataplaneapi', err: errorMessage(err), restartInMs: wait }, 'restarting the Data Plane API failed');
      this.#restartTimer = setTimeout(() => void this.#restart(), wait);
    }
  }

  #wake(): void {
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const wake of waiters) wake();
  }

  async #kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

function readApiVersion(body: string, bin: string): string {
  try {
    const info: unknown = JSON.parse(body);
    if (info !== null && typeof info === 'object' && 'api' in info) {
      const api: unknown = info.api;
      if (api !== null && typeof api === 'object' && 'version' in api && typeof api.version === 'string') return api.version;
    }
  } catch {
    // fall through to the error below
  }
  throw new HaproxyConnectError('DATAPLANE_UNSUPPORTED', `The Data Plane API ${bin} answered /v2/info without api.version: ${body.slice(0, 200)}`);
}
