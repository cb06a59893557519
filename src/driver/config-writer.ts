/**
 * Keeps the run directory in step with what HAProxy runs: certificate files and a haproxy.cfg
 * that `haproxy -c` accepted. Writes for runtime updates are queued (newest wins, debounced) and
 * done off the reconcile loop's path, so a `haproxy -c` never delays the next runtime change; a
 * reload writes synchronously, after whatever is queued. Until a queued write lands, a crash
 * restart starts from the previous file; the reconcile loop then re-applies the difference.
 */
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { checkConfig } from './check.js';
import { writeSyncedTemp, type ManagedFiles } from './files.js';
import type { HaproxyModel } from '../haproxy/model.js';

export const CONFIG_FILE = 'haproxy.cfg';
/** haproxy.cfg names the run directory's files: readable by us (and HAProxy, which runs as us) only. */
const CONFIG_FILE_MODE = 0o600;
/**
 * Queued writes wait for this much quiet, so a burst of runtime changes costs one `haproxy -c`
 * (about 0.1 s of CPU, taken from the same cores as the data plane)...
 */
export const QUEUED_WRITE_QUIET_MS = 1_000;
/** ...but never longer than this after the first queued change. */
export const QUEUED_WRITE_MAX_DELAY_MS = 5_000;

interface Wanted {
  model: HaproxyModel;
  text: string;
}

export class ConfigWriter {
  readonly #files: ManagedFiles;
  readonly #haproxyBin: string;
  readonly #runDir: string;
  readonly #logger: Logger;
  /** The configuration text on disk, checked. */
  #written: string | undefined;
  #queued: Wanted | undefined;
  #worker: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #firstQueuedAt: number | undefined;

  constructor(files: ManagedFiles, haproxyBin: string, runDir: string, logger: Logger) {
    this.#files = files;
    this.#haproxyBin = haproxyBin;
    this.#runDir = runDir;
    this.#logger = logger;
  }

  /** Queues a write for a configuration that is already live (applied at runtime). Never throws. */
  queue(model: HaproxyModel, text: string): void {
    this.#queued = { model, text };
    const now = performance.now();
    this.#firstQueuedAt ??= now;
    const wait = Math.min(QUEUED_WRITE_QUIET_MS, this.#firstQueuedAt + QUEUED_WRITE_MAX_DELAY_MS - now);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#startDrain(), Math.max(0, wait));
  }

  #startDrain(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#firstQueuedAt = undefined;
    this.#worker ??= this.#drain().finally(() => (this.#worker = undefined));
  }

  /** Waits for queued writes, then writes and checks this configuration; throws if HAProxy rejects it. */
  async writeNow(model: HaproxyModel, text: string, signal?: AbortSignal): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#firstQueuedAt = undefined;
    this.#queued = undefined;
    await this.#worker;
    await this.#write({ model, text }, signal);
  }

  /** Writes what is queued now, and resolves when nothing is left (tests, shutdown). */
  async flushed(): Promise<void> {
    if (this.#timer !== undefined) this.#startDrain();
    await this.#worker;
  }

  async #drain(): Promise<void> {
    while (this.#queued !== undefined) {
      const next = this.#queued;
      this.#queued = undefined;
      try {
        await this.#write(next);
      } catch (err) {
        this.#logger.error({ err: errorMessage(err) }, 'cannot write the live configuration to disk; a later reload or restart may not match the live state');
      }
    }
  }

  async #write({ model, text }: Wanted, signal?: AbortSignal): Promise<void> {
    await this.#files.write(model.files);
    if (this.#written === text) return;
    const target = join(this.#runDir, CONFIG_FILE);
    // Written whole and synced, checked, then renamed over the live file: a full disk, a refused
    // configuration or a crash leaves the previous configuration intact.
    const candidate = await writeSyncedTemp(target, text, CONFIG_FILE_MODE);
    try {
      await checkConfig(this.#haproxyBin, candidate, signal);
      await rename(candidate, target).catch((err: unknown) => {
        throw new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot rename ${candidate} to ${target}: ${errorMessage(err)}`, { cause: err });
      });
    } catch (err) {
      await rm(candidate, { force: true }).catch(() => undefined);
      throw err;
    }
    this.#written = text;
  }
}
