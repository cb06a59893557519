/**
 * Wiring and ordered shutdown. `run` starts everything for one sidecar and returns when the signal
 * aborts (clean shutdown) or throws when the sidecar cannot start.
 *
 * Shutdown order: stop intake (Consul watches), drain the reconcile loop, stop HAProxy, close the
 * receiver of HAProxy's logs and the access log, deregister
 * the stats service and close the stats server (-stats-addr; /ready answers 503 from the first
 * moment of shutdown), close the SPOE agent (intentions), remove the run directory.
 */
import { join } from 'node:path';
import type { Config } from './config/config.js';
import type { ConsulAgentApi } from './consul/api.js';
import { ConsulHttpClient } from './consul/client.js';
import { findSidecar } from './consul/find-sidecar.js';
import { HaproxyConnectError, errorMessage, isHaproxyConnectError, toError } from './errors.js';
import { haproxyVersion } from './driver/check.js';
import { ManagedFiles, removeRunDir } from './driver/files.js';
import { ADMIN_SOCKET_FILE, LOG_SOCKET_FILE, PUBLIC_FRONTEND_NAME, SPOE_AGENT_SOCKET_FILE, STATS_SOCKET_FILE } from './domain/haproxy-names.js';
import { runDirProblem } from './haproxy/validate.js';
import { NativeDriver } from './driver/native-driver.js';
import { claimSidecar } from './driver/orphans.js';
import { HaproxyProcess } from './driver/process.js';
import { closeSessionsFrom } from './driver/sessions.js';
import { Authorizer, type RevokedConnection } from './intentions/authorizer.js';
import type { IntentionSet } from './domain/intentions.js';
import { CONFIG_FILE } from './driver/config-writer.js';
import { Reconciler } from './reconcile/reconciler.js';
import type { SnapshotEvent } from './snapshot/fold.js';
import { SnapshotState } from './snapshot/fold.js';
import type { ProxyRegistration } from './domain/snapshot.js';
import { SidecarWatches } from './snapshot/watches.js';
import { SpoeAgent } from './spoe/agent.js';
import { AccessLogWriter } from './telemetry/access-log-writer.js';
import { HaproxyLogReceiver } from './telemetry/haproxy-logs.js';
import type { Logger } from './logger.js';
import { Operations } from './telemetry/operations.js';
import { DEFAULT_HARD_STOP_AFTER_MS } from './translate/translate.js';
import { VERSION } from './version.js';

export const MASTER_SOCKET = 'master.sock';
/**
 * Each watch is one HTTP connection to the agent (a blocking query), and Consul's agent allows 200
 * per client address by default (limits.http_max_conns_per_client; measured on 1.16.2: the 199th
 * and later concurrent requests were answered 429). Warn well before that.
 */
const AGENT_CONNECTIONS_WARNING = 150;

export interface RunDependencies {
  logger: Logger;
  /** Replaces the HTTP client (tests). */
  consul?: ConsulAgentApi;
  /** Overrides the drift check interval (tests). */
  driftCheckIntervalMs?: number;
}

export async function run(config: Config, signal: AbortSignal, deps: RunDependencies): Promise<void> {
  const { logger } = deps;
  const log = {
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

type ComponentLoggers = Record<'main' | 'consul' | 'haproxy' | 'reconcile', Logger>;

/** The first intentions, before anything starts: a token that cannot read them is a start error. */
async function firstIntentions(consul: ConsulAgentApi, registration: ProxyRegistration, signal: AbortSignal): Promise<IntentionSet> {
  try {
    return (await consul.intentionsMatch({ name: registration.serviceName, namespace: registration.namespace }, {}, signal)).value;
  } catch (err) {
    if (!isHaproxyConnectError(err, 'CONSUL_FORBIDDEN')) throw err;
    throw new HaproxyConnectError(
      'CONSUL_FORBIDDEN',
      `Cannot read the intentions of service '${registration.serviceName}' on agent ${consul.address}: the ACL token was refused (it needs intentions:read on the service, e.g. service:read); -enable-intentions=false opts out of enforcement`,
      { cause: err },
    );
  }
}

/** Closes the open connections of sources a new intention denies (best effort: logged, never thrown). */
async function closeRevoked(adminSocket: string, revoked: readonly RevokedConnection[], log: Logger): Promise<void> {
  if (revoked.length === 0) return;
  try {
    const closed = await closeSessionsFrom(adminSocket, PUBLIC_FRONTEND_NAME, new Set(revoked.map((r) => r.source)));
    log.info({ revoked: revoked.length, closed, services: [...new Set(revoked.map((r) => r.identity.service))] }, 'closed connections that intentions no longer allow');
  } catch (err) {
    log.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot close connections that intentions no longer allow');
  }
}

async function runSidecar(config: Config, consul: ConsulAgentApi, signal: AbortSignal, log: ComponentLoggers, driftCheckIntervalMs: number | undefined): Promise<void> {
  const haproxyRelease = await haproxyVersion(config.haproxyBin);
  const agent = await consul.agentSelf(signal);
  const proxy = await findSidecar(consul, { serviceId: config.sidecarFor, tag: config.sidecarForTag }, signal);
  log.main.info(
    { version: VERSION, haproxy: haproxyRelease, consul: consul.address, datacenter: agent.datacenter, node: agent.nodeName, proxyId: proxy.id, service: proxy.destinationServiceName },
    'starting sidecar',
  );

  // Fetch every part once before starting: what cannot work (a bad proxy config, a token without
  // the rights to the leaf) stops the start with a clear error instead of retrying forever.
  const enforce = config.enforceIntentions;
  const state = new SnapshotState(agent.datacenter, { enforceIntentions: enforce });
  const first = await consul.proxyRegistration(proxy.id, {}, signal);
  const blockingQueries = first.value.upstreams.length + (enforce ? 4 : 3);
  if (blockingQueries > AGENT_CONNECTIONS_WARNING) {
    log.consul.warn(
      { blockingQueries, upstreams: first.value.upstreams.length },
      `this sidecar holds ${blockingQueries} blocking queries on the agent; the agent allows limits.http_max_conns_per_client (default 200) connections per client address, shared by every sidecar on the node: raise it, or watches answered 429 keep retrying`,
    );
  }
  const [leaf, roots, intentions] = await Promise.all([consul.leaf(first.value.serviceName, {}, signal), consul.roots({}, signal), enforce ? firstIntentions(consul, first.value, signal) : undefined]);
  state.apply({ kind: 'registration', value: first.value });
  state.apply({ kind: 'leaf', value: leaf.value });
  state.apply({ kind: 'roots', value: roots.value });
  if (intentions !== undefined) state.apply({ kind: 'intentions', value: intentions });

  // Refuses while another daemon serves this proxy; stops what a SIGKILLed one left running.
  const claim = await claimSidecar({ baseDir: config.cfgBasePath, proxyId: proxy.id, logger: log.main });
  const runDir = await claim.createRunDir();
  log.main.info({ runDir }, 'created run directory');
  const adminSocket = join(runDir, ADMIN_SOCKET_FILE);
  // -stats-addr: metrics first (the authorizer and the reconciler report into them); the server starts below.
  const operations =
    config.stats === undefined
      ? undefined
      : new Operations({
          stats: config.stats,
          consul,
          proxy: { id: proxy.id, serviceName: proxy.destinationServiceName },
          build: { version: VERSION, haproxyVersion: haproxyRelease, nodeVersion: process.versions.node },
          statsSocket: join(runDir, STATS_SOCKET_FILE),
          leaf: leaf.value,
          roots: roots.value,
          signal,
          logger: log.main.child({ component: 'stats' }),
        });
  // The agent listens before HAProxy starts, so the first connection already gets a verdict.
  const authLog = log.main.child({ component: 'intentions' });
  const authorizer = enforce ? new Authorizer({ logger: authLog, ...(operations !== undefined && { onDecision: operations.metrics.intentionDecided }) }) : undefined;
  let spoeAgent: SpoeAgent | undefined;
  // HAProxy's logs: the receiver listens before HAProxy starts (the ring connects at once); an
  // access log file that cannot be opened stops the start with an error naming the path.
  const accessLogLog = log.main.child({ component: 'access-log' });
  const accessLog = new AccessLogWriter({ logger: accessLogLog });
  let haproxyLogs: HaproxyLogReceiver | undefined;
  try {
    // Found now, not at the first translate: a base path HAProxy cannot use is a start error.
    const problem = runDirProblem(runDir, [MASTER_SOCKET, ADMIN_SOCKET_FILE, STATS_SOCKET_FILE, LOG_SOCKET_FILE, SPOE_AGENT_SOCKET_FILE]);
    if (problem !== undefined) throw new HaproxyConnectError('CONFIG_INVALID', `-haproxy-cfg-base-path '${config.cfgBasePath}' cannot hold HAProxy's run directory: ${problem}`);
    await accessLog.configure(first.value.accessLogs);
    haproxyLogs = await HaproxyLogReceiver.listen({ socketPath: join(runDir, LOG_SOCKET_FILE), logger: log.haproxy, onAccess: (record) => accessLog.write(record) });
    if (authorizer !== undefined) {
      authorizer.update({ intentions, trustDomain: roots.value.trustDomain });
      spoeAgent = await SpoeAgent.listen({ socketPath: join(runDir, SPOE_AGENT_SOCKET_FILE), handle: authorizer.handle, logger: authLog });
      log.main.info({ intentions: intentions?.intentions.length, defaultAllow: intentions?.defaultAllow }, 'intentions enforced');
    }
  } catch (err) {
    await haproxyLogs?.close();
    await accessLog.close();
    await removeRunDir(runDir).catch(() => {});
    await claim.release();
    throw err;
  }
  const closing = new Set<Promise<void>>();
  /** Intentions and the trust domain reach the authorizer before the reconciler moves HAProxy's epoch. */
  const authorize = (event: SnapshotEvent): void => {
    if (authorizer === undefined) return;
    const revoked = event.kind === 'intentions' ? authorizer.update({ intentions: event.value }) : event.kind === 'roots' ? authorizer.update({ trustDomain: event.value.trustDomain }) : [];
    if (event.kind === 'intentions') {
      authLog.info({ intentions: event.value.intentions.length, defaultAllow: event.value.defaultAllow, revoked: revoked.length, ...authorizer.stats }, 'intentions changed');
    }
    if (revoked.length === 0) return;
    const done = closeRevoked(adminSocket, revoked, authLog).finally(() => closing.delete(done));
    closing.add(done);
  };
  /**
   * The proxy now fronts another service: until that service's intentions arrive, deny every
   * caller (fail closed) rather than judge them by the old service's intentions. Its leaf is
   * dropped from the snapshot too (not ready until the new one is there).
   */
  const forgetIdentity = (before: string | undefined): void => {
    log.main.warn(
      { before, now: state.serviceIdentity(), missing: state.missing() },
      'the proxy fronts another service now: its old leaf and intentions are dropped; not ready until the new ones arrive',
    );
    authorize({ kind: 'intentions', value: { intentions: [], defaultAllow: false } });
  };
  const haproxy = new HaproxyProcess({
    haproxyBin: config.haproxyBin,
    runDir,
    cfgPath: join(runDir, CONFIG_FILE),
    masterSocket: join(runDir, MASTER_SOCKET),
    logger: log.haproxy,
    // Soft stop: the listeners close at once, open connections get the grace period.
    killTimeoutMs: config.shutdownGraceMs,
    onSpawn: (pid) => claim.haproxyStarted(pid),
  });
  const driver = new NativeDriver({ haproxy, files: new ManagedFiles(runDir), haproxyBin: config.haproxyBin, runDir, logger: log.reconcile });
  const reconciler = new Reconciler({
    state,
    driver,
    runDir,
    logger: log.reconcile,
    // A soft-stopped worker must not be killed by hard-stop-after before -shutdown-grace ends.
    hardStopAfterMs: Math.max(DEFAULT_HARD_STOP_AFTER_MS, config.shutdownGraceMs),
    ...(driftCheckIntervalMs !== undefined && { driftCheckIntervalMs }),
    ...(operations !== undefined && { observer: operations.metrics }),
  });
  // A restarted HAProxy runs the file on disk, which may lag the live state by a queued write.
  let haproxyStarts = 0;
  haproxy.on('state', ({ from, to }: { from: string; to: string }) => {
    if (from === 'starting' && to === 'running') reconciler.checkDriftSoon();
    // Back from a crash: Consul may have reaped the stats service while its check was critical.
    if (from === 'starting' && to === 'running' && ++haproxyStarts > 1) void operations?.reregister();
  });
  haproxy.on('exit', ({ expected }: { expected: boolean }) => {
    if (!expected) operations?.metrics.haproxyExitedUnexpectedly();
  });

  const intake = new AbortController();
  const onAbort = (): void => intake.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const watches = new SidecarWatches({
    api: consul,
    datacenter: agent.datacenter,
    proxyId: proxy.id,
    signal: intake.signal,
    watchIntentions: enforce,
    emit: (event) => {
      const servedBefore = state.serviceIdentity();
      if (!state.apply(event)) return;
      if (event.kind === 'registration' && servedBefore !== state.serviceIdentity()) forgetIdentity(servedBefore);
      operations?.snapshotChanged(event);
      authorize(event);
      if (event.kind === 'registration') {
        accessLog
          .configure(event.value.accessLogs)
          .catch((err: unknown) =>
            accessLogLog.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot apply the new access log settings; keeping the previous ones'),
          );
      }
      reconciler.notify();
    },
    onSuccess: (watch) => operations?.metrics.watchAnswered(watch),
    onError: ({ watch, error, attempt, kind }) => {
      const fields = { watch, err: errorMessage(error), code: (error as { code?: string }).code };
      if (kind === 'consumer') {
        log.main.error({ ...fields, stack: error.stack }, 'applying an answer from Consul failed; that answer is dropped and the watch goes on');
        return;
      }
      operations?.metrics.watchFailed(watch, attempt);
      log.consul[attempt > 3 ? 'error' : 'warn']({ ...fields, attempt }, 'watch failed; keeping the last good value and retrying');
    },
  });

  const loop = new AbortController();
  try {
    // Listening before HAProxy starts: /ready can be polled from the start (503 until the first configuration is live).
    await operations?.start({
      haproxyState: () => haproxy.state,
      firstApplied: reconciler.firstApplied,
      missing: () => state.missing(),
      runningWatches: () => watches.running(),
      spoe: () => spoeAgent?.stats,
    });
    watches.start();
    const reconciling = reconciler.run(loop.signal);
    reconciler.firstApplied.then(
      () => log.main.info({ runDir }, 'sidecar ready'),
      () => {},
    );
    // The loop ends early only when the first snapshot leaves no safe configuration: a start error.
    const fatal = reconciling.then(
      () => undefined,
      (err: unknown) => toError(err),
    );
    const stop = await Promise.race([
      fatal,
      new Promise<undefined>((resolve) => {
        if (signal.aborted) resolve(undefined);
        else signal.addEventListener('abort', () => resolve(undefined), { once: true });
      }),
    ]);
    if (stop !== undefined) throw stop;
    log.main.info({ reason: errorMessage(signal.reason) }, 'shutting down');
    intake.abort(signal.reason);
    await watches.stopped();
    loop.abort(signal.reason);
    await reconciling;
  } finally {
    signal.removeEventListener('abort', onAbort);
    intake.abort();
    loop.abort();
    await Promise.all(closing);
    await haproxy.stop().catch((err: unknown) => log.main.error({ err: errorMessage(err) }, 'stopping haproxy failed'));
    // After HAProxy: its last lines (workers finishing connections) are still received.
    await haproxyLogs.close();
    await accessLog.close();
    log.haproxy.debug({ ...haproxyLogs.stats, accessLog: accessLog.stats }, 'log receiver stopped');
    await operations?.stop();
    if (spoeAgent !== undefined) {
      await spoeAgent.close().catch((err: unknown) => log.main.error({ err: errorMessage(err) }, 'closing the SPOE agent failed'));
      authLog.info({ ...authorizer?.stats, ...spoeAgent.stats }, 'intentions agent stopped');
    }
    await reconciler.diskFlushed();
    await removeRunDir(runDir).catch((err: unknown) => log.main.error({ err: errorMessage(err), runDir }, 'removing the run directory failed'));
    await claim.release();
    log.main.info('stopped');
  }
}
