/**
 * One daemon per proxy, and nothing left behind by one that was SIGKILLed.
 *
 * HAProxy runs detached (its own session, src/driver/process.ts), so a daemon killed with
 * SIGKILL leaves its master and workers serving, and its run directory (with the leaf's private
 * key) on disk. With SO_REUSEPORT a new HAProxy would then share the ports with the stale one.
 *
 * claimSidecar(), called before the run directory is made, reads the proxy's owner record
 * (src/driver/owner-record.ts) under -haproxy-cfg-base-path:
 *  - its daemon is alive (same pid, start time and command line): refuse, SIDECAR_ALREADY_RUNNING;
 *  - otherwise stop the HAProxy processes of the recorded run directory — only processes whose
 *    command line is an haproxy with its `-f` / `-S` paths inside that directory — with SIGTERM,
 *    then SIGKILL; then remove that directory if it lies directly under the base path and carries
 *    the run-directory prefix; then take the record over.
 * The claim records the new run directory and every HAProxy master spawned, and removes the record
 * on a clean exit.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import { RUN_DIR_PREFIX, createRunDir, removeRunDir } from './files.js';
import { cmdlineHash, createOwnerRecord, ownerRecordPath, readOwnerRecord, removeOwnerRecordIf, replaceOwnerRecord, type OwnerRecord } from './owner-record.js';
import { isAlive, listPids, procCmdline, procStat, signalPid } from './pids.js';
import { DATAPLANE_CONFIG_FILE } from '../domain/haproxy-names.js';

/** An orphaned master gets this long after SIGTERM (it hard-stops its workers and exits in ms). */
export const ORPHAN_TERM_TIMEOUT_MS = 3_000;
/** After SIGKILL, how long the orphaned processes may take to disappear before the start fails. */
const ORPHAN_KILL_TIMEOUT_MS = 2_000;
const POLL_INTERVAL_MS = 25;
/** Create, or judge and clear a stale record, this many times before giving up (a racing daemon). */
const CLAIM_ATTEMPTS = 3;

type Daemon = OwnerRecord['daemon'];

/** The config file (`-f`) and master socket (`-S`, options after the comma dropped) of an haproxy command line. */
export function haproxyPaths(argv: readonly string[]): string[] {
  const paths: string[] = [];
  for (let i = 1; i < argv.length - 1; i++) {
    const value = argv[i + 1] as string;
    if (argv[i] === '-f') paths.push(value);
    else if (argv[i] === '-S') paths.push(value.split(',')[0] as string);
  }
  return paths;
}

/**
 * True when `argv` is an haproxy whose `-f` and `-S` paths all lie directly in `runDir` (at least
 * one of them given). A reloaded master and its workers carry `-sf <pids> -x sockpair@<fd>` in
 * front (measured on 2.6.12); that does not matter here.
 */
export function isHaproxyOfRunDir(argv: readonly string[], runDir: string): boolean {
  const binary = argv[0];
  if (binary === undefined || !path.basename(binary).toLowerCase().includes('haproxy')) return false;
  const paths = haproxyPaths(argv);
  const dir = path.resolve(runDir);
  return paths.length > 0 && paths.every((p) => path.isAbsolute(p) && path.dirname(path.normalize(p)) === dir);
}

/**
 * True when `runDir` is one of our run directories: an absolute, normalized path directly under
 * `baseDir` whose name is `prefix` plus something. Anything else is never removed.
 */
export function isRunDirUnder(runDir: string, baseDir: string, prefix: string = RUN_DIR_PREFIX): boolean {
  if (!path.isAbsolute(runDir) || path.normalize(runDir) !== runDir || runDir.includes('\0')) return false;
  const name = path.basename(runDir);
  return path.dirname(runDir) === path.resolve(baseDir) && name.startsWith(prefix) && name.length > prefix.length;
}

/** What /proc says about a pid now, to compare with a recorded daemon. */
export interface LiveProcess {
  startTime: string | undefined;
  cmdline: readonly string[] | undefined;
}

/**
 * True when the live process is the recorded daemon: same start time and the same command line.
 * A pid reused by another process differs in both. A live process whose command line cannot be
 * read (another user, hidepid) counts as the daemon when its start time matches: refusing to start
 * is safer than stopping someone else's HAProxy.
 */
export function isRecordedDaemon(recorded: Daemon, live: LiveProcess): boolean {
  if (live.startTime === undefined || live.startTime !== recorded.startTime) return false;
  return live.cmdline === undefined || cmdlineHash(live.cmdline) === recorded.cmdlineSha256;
}

function liveProcess(pid: number): LiveProcess {
  return { startTime: isAlive(pid) ? procStat(pid)?.startTime : undefined, cmdline: procCmdline(pid) };
}

function selfDaemon(): Daemon {
  const cmdline = procCmdline('self') ?? [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
  return { pid: process.pid, startTime: procStat('self')?.startTime ?? '', cmdlineSha256: cmdlineHash(cmdline) };
}

export interface RunDirProcess {
  pid: number;
  ppid: number;
  pgrp: number;
  /** `dataplane-api`: the Data Plane API the daemon ran next to HAProxy (`-dataplane`). */
  role: 'master' | 'worker' | 'dataplane-api';
}

/**
 * True when `argv` is a Data Plane API started for `runDir` (`-dataplane`): `-f` names the run
 * directory's DATAPLANE_CONFIG_FILE. It is the daemon's child, so a SIGKILLed daemon leaves it
 * running too.
 */
export function isDataplaneApiOfRunDir(argv: readonly string[], runDir: string): boolean {
  const at = argv.indexOf('-f');
  const config = at > 0 ? argv[at + 1] : undefined;
  return config !== undefined && path.isAbsolute(config) && path.normalize(config) === path.join(path.resolve(runDir), DATAPLANE_CONFIG_FILE);
}

/** An haproxy or a Data Plane API of `runDir`. */
function isOfRunDir(argv: readonly string[], runDir: string): boolean {
  return isHaproxyOfRunDir(argv, runDir) || isDataplaneApiOfRunDir(argv, runDir);
}

/**
 * Live haproxy processes of `runDir` (and its Data Plane API, if any), found by command line in /proc. A master is the recorded
 * one, or one whose parent is not in the set; its workers (current and draining generations) are
 * its children and share its command line.
 */
export function findRunDirHaproxy(runDir: string, recordedMaster?: number): RunDirProcess[] {
  const found: Array<Omit<RunDirProcess, 'role'> & { api: boolean }> = [];
  for (const pid of listPids()) {
    if (pid === process.pid) continue;
    const argv = procCmdline(pid);
    if (argv === undefined || !isOfRunDir(argv, runDir) || !isAlive(pid)) continue;
    const stat = procStat(pid);
    if (stat !== undefined) found.push({ pid, ppid: stat.ppid, pgrp: stat.pgrp, api: isDataplaneApiOfRunDir(argv, runDir) });
  }
  const pids = new Set(found.filter((p) => !p.api).map((p) => p.pid));
  return found.map(({ api, ...p }) => ({ ...p, role: api ? 'dataplane-api' : p.pid === recordedMaster || !pids.has(p.ppid) ? 'master' : 'worker' }));
}

/** Still the process we found: alive and still an haproxy of the run directory (pids get reused). */
function stillOrphan(pid: number, runDir: string): boolean {
  const argv = procCmdline(pid);
  return argv !== undefined && isAlive(pid) && isOfRunDir(argv, runDir);
}

async function waitGone(pids: readonly number[], runDir: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter((pid) => stillOrphan(pid, runDir));
  while (left.length > 0 && Date.now() < deadline) {
    await delay(POLL_INTERVAL_MS);
    left = left.filter((pid) => stillOrphan(pid, runDir));
  }
  return left;
}

function signalOrphan(pid: number, signal: NodeJS.Signals, runDir: string): void {
  try {
    signalPid(pid, signal);
  } catch (err) {
    throw new HaproxyConnectError('HAPROXY_START_FAILED', `Cannot send ${signal} to haproxy pid ${pid} left running with run directory ${runDir}: ${errorMessage(err)}`, { cause: err });
  }
}

export interface StopOrphansOptions {
  runDir: string;
  recordedMaster?: number | undefined;
  logger: Logger;
  termTimeoutMs?: number;
}

/**
 * Stops every haproxy of `runDir`: SIGTERM to the masters (they hard-stop their workers), then
 * SIGKILL to whatever is left, workers included. Returns the pids stopped; throws
 * HAPROXY_START_FAILED if any survives, since our HAProxy could not bind its ports next to it.
 */
export async function stopRunDirHaproxy(opts: StopOrphansOptions): Promise<number[]> {
  const { runDir, logger } = opts;
  const found = findRunDirHaproxy(runDir, opts.recordedMaster);
  if (opts.recordedMaster !== undefined && !found.some((p) => p.pid === opts.recordedMaster)) {
    logger.info({ pid: opts.recordedMaster, runDir }, 'the recorded haproxy master of the previous run is not running');
  }
  if (found.length === 0) return [];
  const masters = found.filter((p) => p.role === 'master').map((p) => p.pid);
  const workers = found.filter((p) => p.role === 'worker').map((p) => p.pid);
  const dataplaneApis = found.filter((p) => p.role === 'dataplane-api').map((p) => p.pid);
  const pids = found.map((p) => p.pid);
  const startedAt = Date.now();
  logger.warn({ masters, workers, ...(dataplaneApis.length > 0 && { dataplaneApis }), runDir }, 'stopping the haproxy left running by the previous haproxy-connect (SIGTERM)');
  for (const pid of [...masters, ...dataplaneApis]) signalOrphan(pid, 'SIGTERM', runDir);
  let left = await waitGone(pids, runDir, opts.termTimeoutMs ?? ORPHAN_TERM_TIMEOUT_MS);
  if (left.length > 0) {
    logger.warn({ pids: left, runDir, timeoutMs: opts.termTimeoutMs ?? ORPHAN_TERM_TIMEOUT_MS }, 'the orphaned haproxy did not stop after SIGTERM; sending SIGKILL');
    // Checked again just before the signal: only a process that still is that haproxy.
    for (const pid of left) if (stillOrphan(pid, runDir)) signalOrphan(pid, 'SIGKILL', runDir);
    left = await waitGone(left, runDir, ORPHAN_KILL_TIMEOUT_MS);
  }
  if (left.length > 0) {
    throw new HaproxyConnectError('HAPROXY_START_FAILED', `haproxy pids ${left.join(', ')} of the previous run (run directory ${runDir}) are still running after SIGKILL`);
  }
  logger.info({ pids, runDir, durationMs: Date.now() - startedAt }, 'stopped the orphaned haproxy');
  return pids;
}

/** Removes the previous run's directory if it is one of ours under `baseDir`; logs what it did. */
async function removePreviousRunDir(runDir: string, baseDir: string, prefix: string, logger: Logger): Promise<void> {
  if (!isRunDirUnder(runDir, baseDir, prefix)) {
    logger.warn({ runDir, baseDir }, `not removing the recorded run directory: it is not a '${prefix}*' directory directly under the base path`);
    return;
  }
  let stat: Stats;
  try {
    stat = await fs.lstat(runDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      logger.info({ runDir }, 'the run directory of the previous run is already gone');
      return;
    }
    throw new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot inspect the previous run directory ${runDir}: ${errorMessage(err)}`, { cause: err });
  }
  if (!stat.isDirectory()) {
    logger.warn({ runDir }, 'not removing the recorded run directory: it is not a directory');
    return;
  }
  await removeRunDir(runDir);
  logger.info({ runDir }, 'removed the run directory of the previous run');
}

export interface ClaimOptions {
  /** -haproxy-cfg-base-path: where run directories and owner records live. */
  baseDir: string;
  proxyId: string;
  logger: Logger;
  runDirPrefix?: string;
  termTimeoutMs?: number;
}

/**
 * Claims the proxy for this daemon (see the module comment): refuses with SIDECAR_ALREADY_RUNNING
 * while another daemon serves it, and cleans up after a dead one first.
 */
export async function claimSidecar(opts: ClaimOptions): Promise<SidecarClaim> {
  const baseDir = path.resolve(opts.baseDir);
  const prefix = opts.runDirPrefix ?? RUN_DIR_PREFIX;
  const { proxyId, logger } = opts;
  const file = ownerRecordPath(baseDir, proxyId);
  const record: OwnerRecord = { version: 1, proxyId, daemon: selfDaemon(), updatedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
    if (await createOwnerRecord(file, record)) {
      logger.debug({ ownerRecord: file, proxyId }, 'claimed the proxy');
      return new SidecarClaim({ file, baseDir, prefix, record, logger });
    }
    const found = await readOwnerRecord(file);
    if (found.kind === 'absent') continue;
    if (found.kind === 'invalid') {
      logger.warn({ ownerRecord: file, reason: found.reason }, 'replacing an owner record that cannot be read; nothing it names is touched');
    } else if (found.record.proxyId !== proxyId) {
      logger.warn({ ownerRecord: file, recordProxyId: found.record.proxyId, proxyId }, 'replacing an owner record of another proxy ID; nothing it names is touched');
    } else {
      const previous = found.record;
      if (isRecordedDaemon(previous.daemon, liveProcess(previous.daemon.pid))) {
        const self = previous.daemon.pid === process.pid ? ' (this process)' : '';
        throw new HaproxyConnectError(
          'SIDECAR_ALREADY_RUNNING',
          `Cannot start sidecar: haproxy-connect pid ${previous.daemon.pid}${self} already serves proxy '${proxyId}' (owner record ${file}); stop it first`,
        );
      }
      logger.warn(
        { ownerRecord: file, previousPid: previous.daemon.pid, runDir: previous.runDir, haproxyMasterPid: previous.haproxyMasterPid },
        'the previous haproxy-connect for this proxy is gone without cleaning up; cleaning up after it',
      );
      if (previous.runDir !== undefined) {
        if (isRunDirUnder(previous.runDir, baseDir, prefix)) {
          await stopRunDirHaproxy({ runDir: previous.runDir, recordedMaster: previous.haproxyMasterPid, logger, ...(opts.termTimeoutMs !== undefined && { termTimeoutMs: opts.termTimeoutMs }) });
        }
        await removePreviousRunDir(previous.runDir, baseDir, prefix, logger);
      }
    }
    await removeOwnerRecordIf(file, found.bytes);
  }
  throw new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot claim owner record ${file} for proxy '${proxyId}': it kept changing (another haproxy-connect starting for the same proxy?)`);
}

/** This daemon's hold on its proxy: records the run directory and HAProxy masters; released on exit. */
export class SidecarClaim {
  readonly file: string;
  readonly #baseDir: string;
  readonly #prefix: string;
  readonly #logger: Logger;
  #record: OwnerRecord;
  #writes: Promise<void> = Promise.resolve();
  #released = false;

  constructor(opts: { file: string; baseDir: string; prefix: string; record: OwnerRecord; logger: Logger }) {
    this.file = opts.file;
    this.#baseDir = opts.baseDir;
    this.#prefix = opts.prefix;
    this.#record = opts.record;
    this.#logger = opts.logger;
  }

  get record(): OwnerRecord {
    return this.#record;
  }

  /** Creates the private run directory and records it. On failure nothing is left and the claim is released. */
  async createRunDir(): Promise<string> {
    let runDir: string | undefined;
    try {
      runDir = await createRunDir(this.#baseDir, this.#prefix);
      await this.#update({ runDir });
    } catch (err) {
      if (runDir !== undefined) await removeRunDir(runDir).catch(() => undefined);
      await this.release();
      throw err;
    }
    return runDir;
  }

  /** Records a newly spawned HAProxy master (the first one, and each restart after a crash). */
  haproxyStarted(pid: number): void {
    void this.#update({ haproxyMasterPid: pid }).catch((err: unknown) => {
      this.#logger.error({ err: errorMessage(err), pid, ownerRecord: this.file }, 'cannot record the haproxy master pid; a daemon started after a SIGKILL may not find it');
    });
  }

  /** Removes the record (clean exit). Never throws: a failure is logged. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.#writes;
    try {
      const found = await readOwnerRecord(this.file);
      if (found.kind !== 'valid' || found.record.daemon.pid !== process.pid || found.record.daemon.startTime !== this.#record.daemon.startTime) {
        this.#logger.warn({ ownerRecord: this.file }, 'the owner record is no longer ours; leaving it');
        return;
      }
      await removeOwnerRecordIf(this.file, found.bytes);
      this.#logger.debug({ ownerRecord: this.file }, 'removed the owner record');
    } catch (err) {
      this.#logger.error({ err: errorMessage(err), ownerRecord: this.file }, 'cannot remove the owner record');
    }
  }

  #update(change: Partial<Pick<OwnerRecord, 'runDir' | 'haproxyMasterPid'>>): Promise<void> {
    const next = this.#writes.then(async () => {
      if (this.#released) return;
      this.#record = { ...this.#record, ...change, updatedAt: new Date().toISOString() };
      await replaceOwnerRecord(this.file, this.#record);
    });
    this.#writes = next.catch(() => undefined);
    return next;
  }
}
