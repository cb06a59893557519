/**
 * The reconcile loop: whenever the snapshot changes, translate it (pure), validate, render (pure),
 * and apply — write files, `haproxy -c`, then start or reload HAProxy. Bursts are coalesced: the
 * loop always works on the newest snapshot and the producers never wait for it. A bad update is
 * logged with its reason and the last good configuration keeps serving.
 */
import { writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage, isHaproxyConnectError } from './errors.js';
import { checkConfig } from './haproxy/check.js';
import type { ManagedFiles } from './haproxy/files.js';
import type { HaproxyModel } from './haproxy/model.js';
import type { HaproxyProcess } from './haproxy/process.js';
import { render } from './haproxy/render.js';
import { validateModel } from './haproxy/validate.js';
import type { SnapshotState } from './snapshot/fold.js';
import type { Logger } from './telemetry/logger.js';
import { translate } from './translate/translate.js';
import { describeChanges } from './translate/changes.js';

/** After a failed apply that may be transient (HAProxy start/reload), try again after this delay. */
export const RETRY_APPLY_MS = 2_000;
export const CONFIG_FILE = 'haproxy.cfg';

export interface ReconcilerOptions {
  state: SnapshotState;
  haproxy: HaproxyProcess;
  files: ManagedFiles;
  haproxyBin: string;
  runDir: string;
  logger: Logger;
}

interface Applied {
  model: HaproxyModel;
  text: string;
}

export class Reconciler {
  readonly #opts: ReconcilerOptions;
  #dirty = true;
  #wake: (() => void) | undefined;
  #applied: Applied | undefined;
  #firstApplied: { promise: Promise<void>; resolve: () => void };
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(opts: ReconcilerOptions) {
    this.#opts = opts;
    let resolve = (): void => {};
    const promise = new Promise<void>((r) => (resolve = r));
    this.#firstApplied = { promise, resolve };
  }

  /** Marks the snapshot as changed; the loop picks up the newest state. Never blocks. */
  notify(): void {
    this.#dirty = true;
    this.#wake?.();
  }

  /** Resolves once a first configuration is live. */
  get firstApplied(): Promise<void> {
    return this.#firstApplied.promise;
  }

  get applied(): HaproxyModel | undefined {
    return this.#applied?.model;
  }

  async run(signal: AbortSignal): Promise<void> {
    const onAbort = (): void => this.#wake?.();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (!this.#dirty) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
          this.#wake = undefined;
          continue;
        }
        this.#dirty = false;
        await this.#reconcileOnce(signal);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      clearTimeout(this.#retryTimer);
    }
  }

  async #reconcileOnce(signal: AbortSignal): Promise<void> {
    const { state, logger, runDir } = this.#opts;
    const snapshot = state.snapshot();
    if (snapshot === undefined) {
      logger.debug({ missing: state.missing() }, 'waiting for a complete snapshot');
      return;
    }
    let model: HaproxyModel;
    let text: string;
    try {
      model = translate(snapshot, { runDir });
      validateModel(model);
      text = render(model);
    } catch (err) {
      logger.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot translate the snapshot; keeping the last good configuration');
      return;
    }
    const previous = this.#applied;
    if (previous !== undefined && previous.text === text && sameFiles(previous.model, model)) return;
    const reasons = previous === undefined ? ['initial configuration'] : describeChanges(previous.model, model);
    try {
      await this.#apply(model, text, reasons, signal);
      this.#applied = { model, text };
      this.#firstApplied.resolve();
    } catch (err) {
      if (signal.aborted) return;
      logger.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined, reasons }, 'applying the configuration failed; the last good configuration keeps serving');
      await this.#restoreLastGood();
      if (!(isHaproxyConnectError(err, 'HAPROXY_CONFIG_REJECTED') || isHaproxyConnectError(err, 'MODEL_INVALID'))) {
        this.#retryTimer = setTimeout(() => this.notify(), RETRY_APPLY_MS);
      }
    }
  }

  async #apply(model: HaproxyModel, text: string, reasons: string[], signal: AbortSignal): Promise<void> {
    const { files, haproxy, haproxyBin, runDir, logger } = this.#opts;
    await files.write(model.files);
    const candidate = join(runDir, `${CONFIG_FILE}.candidate`);
    await writeFile(candidate, text, { mode: 0o600 });
    await checkConfig(haproxyBin, candidate, signal);
    await rename(candidate, join(runDir, CONFIG_FILE));
    switch (haproxy.state) {
      case 'stopped':
        logger.info({ reasons }, 'starting haproxy');
        await haproxy.start();
        break;
      case 'running':
        logger.info({ reasons }, 'reloading haproxy');
        await haproxy.reload();
        break;
      default:
        // Crashed and waiting to restart: the restart reads the configuration just written.
        logger.info({ reasons, haproxyState: haproxy.state }, 'configuration written; haproxy picks it up when it restarts');
    }
  }

  /** Puts the files of the live configuration back, so a restart serves what is live now. */
  async #restoreLastGood(): Promise<void> {
    const last = this.#applied;
    if (last === undefined) return;
    try {
      await this.#opts.files.write(last.model.files);
      await writeFile(join(this.#opts.runDir, CONFIG_FILE), last.text, { mode: 0o600 });
    } catch (err) {
      this.#opts.logger.error({ err: errorMessage(err) }, 'cannot restore the files of the last good configuration');
    }
  }
}

function sameFiles(a: HaproxyModel, b: HaproxyModel): boolean {
  if (a.files.length !== b.files.length) return false;
  return a.files.every((f, i) => {
    const g = b.files[i];
    return g !== undefined && f.name === g.name && f.content === g.content && f.mode === g.mode;
  });
}
