/**
 * The native driver: the run directory (certificates, haproxy.cfg checked with `haproxy -c`),
 * the master CLI for starts and hitless reloads, and the runtime API for everything else.
 */
import { join } from 'node:path';
import type { Logger } from '../logger.js';
import { ConfigWriter } from './config-writer.js';
import type { ActivateOutcome, DriverState, HaproxyDriver, LiveState } from './driver.js';
import type { ManagedFiles } from './files.js';
import type { HaproxyModel } from '../haproxy/model.js';
import { ADMIN_SOCKET_FILE, LEAF_FILE } from '../domain/haproxy-names.js';
import type { HaproxyProcess } from './process.js';
import { applyOps, type OpResult } from './runtime-apply.js';
import { RuntimeSession } from './runtime-session.js';
import { parseServersState, parseShowSslCert } from '../haproxy/runtime-state.js';
import type { RuntimeOp } from '../haproxy/runtime-ops.js';

export interface NativeDriverOptions {
  haproxy: HaproxyProcess;
  files: ManagedFiles;
  haproxyBin: string;
  runDir: string;
  logger: Logger;
}

export class NativeDriver implements HaproxyDriver {
  readonly name = 'native';
  readonly #haproxy: HaproxyProcess;
  readonly #runDir: string;
  readonly #disk: ConfigWriter;
  #adminSocket: string = ADMIN_SOCKET_FILE;

  constructor(opts: NativeDriverOptions) {
    this.#haproxy = opts.haproxy;
    this.#runDir = opts.runDir;
    this.#disk = new ConfigWriter(opts.files, opts.haproxyBin, opts.runDir, opts.logger);
  }

  get state(): DriverState {
    const state = this.#haproxy.state;
    return state === 'running' || state === 'stopped' ? state : 'unavailable';
  }

  get detail(): string {
    return this.#haproxy.state;
  }

  async activate(model: HaproxyModel, text: string, signal: AbortSignal): Promise<ActivateOutcome> {
    await this.#disk.writeNow(model, text, signal);
    this.#adminSocket = model.global.adminSocket;
    switch (this.#haproxy.state) {
      case 'stopped':
        await this.#haproxy.start();
        return 'started';
      case 'running':
        await this.#haproxy.reload();
        return 'reloaded';
      default:
        // Crashed and waiting to restart: the restart reads the configuration just written.
        return 'deferred';
    }
  }

  applyRuntime(ops: readonly RuntimeOp[], signal: AbortSignal): Promise<OpResult[]> {
    return applyOps(this.#socket(), ops, { signal });
  }

  persist(model: HaproxyModel, text: string): void {
    this.#disk.queue(model, text);
  }

  async restore(model: HaproxyModel, text: string): Promise<void> {
    await this.#disk.writeNow(model, text);
  }

  async readLive(applied: HaproxyModel, signal: AbortSignal): Promise<LiveState> {
    const session = await RuntimeSession.open(this.#socket(), { signal });
    try {
      const servers = parseServersState(await session.send('show servers state'));
      const leaf = parseShowSslCert(await session.send(`show ssl cert ${join(applied.global.runDir, LEAF_FILE)}`));
      return { servers, leafSerial: leaf.serial };
    } finally {
      session.close();
    }
  }

  flushed(): Promise<void> {
    return this.#disk.flushed();
  }

  #socket(): string {
    return join(this.#runDir, this.#adminSocket);
  }
}
