/**
 * Keeps the run directory in step with what HAProxy runs: certificate files and a haproxy.cfg
 * that `haproxy -c` accepted. Writes for runtime updates are queued (newest wins) and done off the
 * reconcile loop's path, so a `haproxy -c` (about 0.1 s) never delays the next runtime change;
 * a reload writes synchronously, after whatever is queued.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';
import { checkConfig } from './check.js';
import type { ManagedFiles } from './files.js';
import type { HaproxyModel } from './model.js';

export const CONFIG_FILE = 'haproxy.cfg';

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

  constructor(files: ManagedFiles, haproxyBin: string, runDir: string, logger: Logger) {
    this.#files = files;
    this.#haproxyBin = haproxyBin;
    this.#runDir = runDir;
    this.#logger = logger;
  }

  /** Queues a write for a configuration that is already live (applied at runtime). Never throws. */
  queue(model: HaproxyModel, text: string): void {
    this.#queued = { model, text };
    this.#worker ??= this.#drain().finally(() => (this.#worker = undefined));
  }

  /** Waits for queued writes, then writes and checks this configuration; throws if HAProxy rejects it. */
  async writeNow(model: HaproxyModel, text: string, signal?: AbortSignal): Promise<void> {
    this.#queued = undefined;
    await this.#worker;
    await this.#write({ model, text }, signal);
  }

  /** Resolves when nothing is queued. */
  async flushed(): Promise<void> {
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
    const candidate = join(this.#runDir, `${CONFIG_FILE}.candidate`);
    await writeFile(candidate, text, { mode: 0o600 });
    await checkConfig(this.#haproxyBin, candidate, signal);
    await rename(candidate, join(this.#runDir, CONFIG_FILE));
    this.#written = text;
  }
}
