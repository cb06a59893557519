/**
 * The composition root: `run` starts every part of one sidecar in order and returns when the
 * signal aborts (clean shutdown), or throws when the sidecar cannot start. The parts live in
 * src/sidecar/, each with its own start and stop; this file is the one place that shows their order.
 *
 * Start: read the first snapshot → claim the proxy (owner record, run directory) → logs (HAProxy's
 * log receiver, access log) → intentions (authorizer, SPOE agent) → HAProxy (supervisor, reconcile
 * loop, restart policy) → operations (/metrics, /ready) → intake (Consul watches) → reconcile loop
 * (HAProxy starts with its first apply).
 *
 * Stop: intake (nothing new reaches the snapshot) → the reconcile loop drains → revocations in
 * flight → HAProxy (restart policy first; soft stop with -shutdown-grace) → logs (after HAProxy:
 * the last lines of draining workers are still received) → operations (deregisters the stats
 * service; /ready answers 503 from the first moment of shutdown) → intentions (the SPOE agent) →
 * the last disk write → the run directory → the owner record.
 */
import { join } from 'node:path';
import type { Config } from './config/config.js';
import { formatListenAddress } from './config/listen-address.js';
import type { ConsulAgentApi } from './consul/api.js';
import { ConsulHttpClient } from './consul/client.js';
import { ADMIN_SOCKET_FILE, LOG_SOCKET_FILE, SPOE_AGENT_SOCKET_FILE, STATS_SOCKET_FILE } from './domain/haproxy-names.js';
import type { SnapshotEvent } from './domain/snapshot.js';
import { removeRunDir } from './driver/files.js';
import { type SidecarClaim, claimSidecar } from './driver/orphans.js';
import { HaproxyConnectError, errorMessage, toError } from './errors.js';
import { runDirProblem } from './haproxy/validate.js';
import type { Logger } from './logger.js';
import { readFirstSnapshot } from './sidecar/first-snapshot.js';
import { type HaproxyPart, MASTER_SOCKET, createHaproxy } from './sidecar/haproxy.js';
import { type IntakePart, startIntake } from './sidecar/intake.js';
import { type IntentionsPart, startIntentions } from './sidecar/intentions.js';
import { type LogsPart, startLogs } from './sidecar/logs.js';
import { SnapshotState } from './snapshot/fold.js';
import { Operations } from './telemetry/operations.js';
import { VERSION } from './version.js';

export { MASTER_SOCKET } from './sidecar/haproxy.js';

export interface RunDependencies {
  logger: Logger;
  /** Replaces the HTTP client (tests). */
  consul?: ConsulAgentApi;
  /** Overrides the drift check interval (tests). */
  driftCheckIntervalMs?: number;
}

type ComponentLoggers = Record<'main' | 'consul' | 'haproxy' | 'reconcile', Logger>;

export async function run(config: Config, signal: AbortSignal, deps: RunDependencies): Promise<void> {
  const { logger } = deps;
  const log: ComponentLoggers = {
    main: logger.child({ component: 'main' }),
    consul: logger.child({ component: 'consul' }),
    haproxy: logger.child({ component: 'haproxy' }),
    reconcile: logger.child({ component: 'reconcile' }),
  };
  if (!config.enforceIntentions) {
    log.main.warn('intentions are NOT enforced (-enable-intentions=false): every client with a certificate from the Consul CA is accepted');
  }
  const ownClient =
    deps.consul === undefined
      ? new ConsulHttpClient({
          address: config.consul.address,
          ...(config.consul.token !== undefined && { token: config.consul.token }),
          ...(config.consul.tls !== undefined && { tls: config.consul.tls }),
        })
      : undefined;
  const consul = deps.consul ?? (ownClient as ConsulHttpClient);
  try {
    await runSidecar(config, consul, signal, log, deps.driftCheckIntervalMs);
  } finally {
    await ownClient?.close();
  }
}

/** The parts started so far; shutdown() stops those that exist, in the order of the header. */
interface Parts {
  claim?: SidecarClaim;
  runDir?: string;
  logs?: LogsPart;
  intentions?: IntentionsPart;
  haproxy?: HaproxyPart;
  operations?: Operations;
  intake?: IntakePart;
  /** The reconcile loop and the controller that ends it. */
  loop?: { done: Promise<void>; controller: AbortController };
}

async function runSidecar(config: Config, consul: ConsulAgentApi, signal: AbortSignal, log: ComponentLoggers, driftCheckIntervalMs: number | undefined): Promise<void> {
  const first = await readFirstSnapshot(config, consul, signal, log);
  const enforce = config.enforceIntentions;
  const state = new SnapshotState(first.datacenter, { enforceIntentions: enforce });
  state.apply({ kind: 'registration', value: first.registration });
  state.apply({ kind: 'leaf', value: first.leaf });
  state.apply({ kind: 'roots', value: first.roots });
  if (first.intentions !== undefined) state.apply({ kind: 'intentions', value: first.intentions });

  const parts: Parts = {};
  try {
    // Refuses while another daemon serves this proxy; stops what a SIGKILLed one left running.
    parts.claim = await claimSidecar({ baseDir: config.cfgBasePath, proxyId: first.proxyId, logger: log.main });
    const runDir = await parts.claim.createRunDir();
    parts.runDir = runDir;
    log.main.info({ runDir }, 'created run directory');
    // Found now, not at the first translate: a base path HAProxy cannot use is a start error.
    const problem = runDirProblem(runDir, [MASTER_SOCKET, ADMIN_SOCKET_FILE, STATS_SOCKET_FILE, LOG_SOCKET_FILE, SPOE_AGENT_SOCKET_FILE]);
    if (problem !== undefined) throw new HaproxyConnectError('CONFIG_INVALID', `-haproxy-cfg-base-path '${config.cfgBasePath}' cannot hold HAProxy's run directory: ${problem}`);

    // -stats-addr: metrics exist first (the authorizer and the reconciler report into them); the server listens below.
    const operations =
      config.stats === undefined
        ? undefined
        : new Operations({
            stats: config.stats,
            consul,
            proxy: { id: first.proxyId, serviceName: first.serviceName },
            build: { version: VERSION, haproxyVersion: first.haproxyRelease, nodeVersion: process.versions.node },
            statsSocket: join(runDir, STATS_SOCKET_FILE),
            leaf: first.leaf,
            roots: first.roots,
            signal,
            logger: log.main.child({ component: 'stats' }),
          });
    parts.operations = operations;

    const logs = await startLogs(runDir, first.registration.accessLogs, log, operations?.accessObserved);
    parts.logs = logs;
    const intentions =
      first.intentions === undefined
        ? undefined
        : await startIntentions({
            runDir,
            adminSocket: join(runDir, ADMIN_SOCKET_FILE),
            intentions: first.intentions,
            trustDomain: first.roots.trustDomain,
            leafCertPem: first.leaf.certPem,
            logger: log.main.child({ component: 'intentions' }),
            ...(operations !== undefined && { onDecision: operations.metrics.intentionDecided }),
          });
    parts.intentions = intentions;
    const claim = parts.claim;
    const haproxy = createHaproxy({
      haproxyBin: config.haproxyBin,
      runDir,
      state,
      shutdownGraceMs: config.shutdownGraceMs,
      ...(config.dataplaneBin !== undefined && { dataplaneBin: config.dataplaneBin }),
      logger: log,
      onSpawn: (pid) => claim.haproxyStarted(pid),
      // Back from a crash: Consul may have reaped the stats service while its check was critical.
      onRestarted: () => void operations?.reregister(),
      onCrash: () => operations?.metrics.haproxyExitedUnexpectedly(),
      ...(operations !== undefined && { observer: operations.metrics }),
      ...(driftCheckIntervalMs !== undefined && { driftCheckIntervalMs }),
      ...(config.stats !== undefined && {
        reservedListeners: [{ conflict: `overlaps -stats-addr ${formatListenAddress(config.stats.listen)}`, address: config.stats.listen.host ?? '0.0.0.0', port: config.stats.listen.port }],
      }),
    });
    parts.haproxy = haproxy;

    /** One answer from Consul: folded into the snapshot, then fanned out to the parts that follow it. */
    const onEvent = (event: SnapshotEvent): void => {
      const servedBefore = state.serviceIdentity();
      if (!state.apply(event)) return;
      if (event.kind === 'registration' && servedBefore !== state.serviceIdentity()) {
        // The proxy fronts another service now: deny every caller (fail closed) until its
        // intentions arrive, rather than judge them by the old service's. Its leaf is dropped too.
        log.main.warn(
          { before: servedBefore, now: state.serviceIdentity(), missing: state.missing() },
          'the proxy fronts another service now: its old leaf and intentions are dropped; not ready until the new ones arrive',
        );
        intentions?.denyAll();
      }
      operations?.snapshotChanged(event);
      // Intentions and the trust domain reach the authorizer before the reconciler moves HAProxy's epoch.
      intentions?.observe(event);
      if (event.kind === 'registration') logs.configure(event.value.accessLogs);
      haproxy.reconciler.notify();
    };

    // Listening before HAProxy starts: /ready can be polled from the start (503 until the first configuration is live).
    await operations?.start({
      haproxyState: () => haproxy.haproxy.state,
      firstApplied: haproxy.reconciler.firstApplied,
      missing: () => state.missing(),
      runningWatches: () => parts.intake?.running() ?? [],
      spoe: () => intentions?.spoeStats(),
      snapshot: () => state.snapshot(),
    });
    parts.intake = startIntake({
      consul,
      datacenter: first.datacenter,
      proxyId: first.proxyId,
      watchIntentions: enforce,
      onEvent,
      ...(operations !== undefined && { metrics: operations.metrics }),
      logger: log,
    });
    const controller = new AbortController();
    parts.loop = { done: haproxy.run(controller.signal), controller };
    haproxy.reconciler.firstApplied.then(
      () => log.main.info({ runDir }, 'sidecar ready'),
      () => {},
    );
    // The loop ends early only when the first snapshot leaves no safe configuration: a start error.
    const fatal = parts.loop.done.then(
      () => undefined,
      (err: unknown) => toError(err),
    );
    const stop = await Promise.race([fatal, aborted(signal)]);
    if (stop !== undefined) throw stop;
    log.main.info({ reason: errorMessage(signal.reason) }, 'shutting down');
  } finally {
    await shutdown(parts, signal.reason, log.main);
  }
}

/** Resolves (with undefined) when the signal aborts. */
function aborted(signal: AbortSignal): Promise<undefined> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(undefined);
    else signal.addEventListener('abort', () => resolve(undefined), { once: true });
  });
}

/** Stops the parts that exist, in the order of the header. Never throws: each failure is logged. */
async function shutdown(parts: Parts, reason: unknown, log: Logger): Promise<void> {
  await parts.intake?.stop(reason);
  if (parts.loop !== undefined) {
    parts.loop.controller.abort(reason);
    await parts.loop.done.catch(() => undefined);
  }
  await parts.intentions?.settle();
  await parts.haproxy?.stopHaproxy();
  await parts.logs?.stop().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'closing the log receiver failed'));
  await parts.operations?.stop();
  await parts.intentions?.stop();
  await parts.haproxy?.reconciler.diskFlushed();
  if (parts.runDir !== undefined) {
    const runDir = parts.runDir;
    await removeRunDir(runDir).catch((err: unknown) => log.error({ err: errorMessage(err), runDir }, 'removing the run directory failed'));
  }
  await parts.claim?.release();
  if (parts.claim !== undefined) log.info('stopped');
}
