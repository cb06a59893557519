/**
 * The HAProxy part: the master-worker supervisor, the native driver, the reconcile loop that applies
 * snapshots through it, and the restart policy for a master that dies. HAProxy itself starts with
 * the loop's first apply; run() starts the loop, stop() drains it and then stops HAProxy.
 */
import { join } from 'node:path';
import { errorMessage } from '../errors.js';
import { CONFIG_FILE } from '../driver/config-writer.js';
import { ManagedFiles } from '../driver/files.js';
import { NativeDriver } from '../driver/native-driver.js';
import { DataplaneApiProcess } from '../dataplane/api-process.js';
import { DataplaneDriver } from '../dataplane/driver.js';
import { HaproxyProcess } from '../driver/process.js';
import type { Logger } from '../logger.js';
import { type ReconcileObserver, Reconciler } from '../reconcile/reconciler.js';
import { RestartPolicy } from '../reconcile/restart-policy.js';
import type { SnapshotState } from '../snapshot/fold.js';
import { DEFAULT_HARD_STOP_AFTER_MS, type ReservedListener } from '../translate/translate.js';

/** The master CLI socket in the run directory. */
export const MASTER_SOCKET = 'master.sock';

export interface HaproxyPartOptions {
  haproxyBin: string;
  runDir: string;
  state: SnapshotState;
  /** -dataplane: apply through the Data Plane API started from this binary; absent: the native driver. */
  dataplaneBin?: string;
  /** Soft stop: the listeners close at once, open connections get this long. */
  shutdownGraceMs: number;
  logger: { haproxy: Logger; reconcile: Logger };
  /** Told of every master spawned (the owner record). */
  onSpawn: (pid: number) => void;
  /** Told when HAProxy was restarted after a crash. */
  onRestarted?: () => void;
  /** Told when the master died on its own. */
  onCrash?: () => void;
  observer?: ReconcileObserver;
  driftCheckIntervalMs?: number;
  /** Ports exposed paths must not take (the daemon's -stats-addr). */
  reservedListeners?: readonly ReservedListener[];
}

export interface HaproxyPart {
  readonly haproxy: HaproxyProcess;
  readonly reconciler: Reconciler;
  /** Runs the reconcile loop until `signal` aborts; rejects only when the first snapshot leaves no safe configuration. */
  run(signal: AbortSignal): Promise<void>;
  /** Cancels a pending restart, then stops HAProxy (soft stop, escalating). Errors are logged. */
  stopHaproxy(): Promise<void>;
}

export function createHaproxy(options: HaproxyPartOptions): HaproxyPart {
  const { runDir, logger: log } = options;
  const haproxy = new HaproxyProcess({
    haproxyBin: options.haproxyBin,
    runDir,
    cfgPath: join(runDir, CONFIG_FILE),
    masterSocket: join(runDir, MASTER_SOCKET),
    logger: log.haproxy,
    killTimeoutMs: options.shutdownGraceMs,
    onSpawn: options.onSpawn,
  });
  const api = options.dataplaneBin === undefined ? undefined : new DataplaneApiProcess({ bin: options.dataplaneBin, runDir, haproxyBin: options.haproxyBin, logger: log.haproxy });
  const driver =
    api === undefined
      ? new NativeDriver({ haproxy, files: new ManagedFiles(runDir), haproxyBin: options.haproxyBin, runDir, logger: log.reconcile })
      : new DataplaneDriver({ haproxy, api, files: new ManagedFiles(runDir), runDir, logger: log.reconcile });
  const reconciler = new Reconciler({
    state: options.state,
    driver,
    runDir,
    logger: log.reconcile,
    // A soft-stopped worker must not be killed by hard-stop-after before -shutdown-grace ends.
    hardStopAfterMs: Math.max(DEFAULT_HARD_STOP_AFTER_MS, options.shutdownGraceMs),
    ...(options.driftCheckIntervalMs !== undefined && { driftCheckIntervalMs: options.driftCheckIntervalMs }),
    ...(options.observer !== undefined && { observer: options.observer }),
    ...(options.reservedListeners !== undefined && { reservedListeners: options.reservedListeners }),
  });
  const restarts = new RestartPolicy({
    target: haproxy,
    logger: log.haproxy,
    onRestarted: () => options.onRestarted?.(),
  });
  // A (re)started HAProxy runs the file on disk, which may lag the live state by a queued write.
  haproxy.on('state', ({ from, to }: { from: string; to: string }) => {
    if (from === 'starting' && to === 'running') reconciler.checkDriftSoon();
  });
  haproxy.on('exit', ({ expected }: { expected: boolean }) => {
    if (!expected) options.onCrash?.();
  });
  return {
    haproxy,
    reconciler,
    run: async (signal) => {
      // Started before the loop, so a missing binary or a version we cannot drive stops the start.
      await api?.start();
      return reconciler.run(signal);
    },
    stopHaproxy: async () => {
      await restarts.stop();
      await haproxy.stop().catch((err: unknown) => log.haproxy.error({ err: errorMessage(err) }, 'stopping haproxy failed'));
      await api?.stop().catch((err: unknown) => log.haproxy.error({ err: errorMessage(err) }, 'stopping the Data Plane API failed'));
    },
  };
}
