/**
 * Wiring and ordered shutdown. `run` starts everything for one sidecar and returns when the signal
 * aborts (clean shutdown) or throws when the sidecar cannot start.
 *
 * Shutdown order: stop intake (Consul watches), drain the reconcile loop, stop HAProxy, remove the
 * run directory.
 */
import { join } from 'node:path';
import type { Config } from './config/config.js';
import type { ConsulAgentApi } from './consul/api.js';
import { ConsulHttpClient } from './consul/client.js';
import { findSidecar } from './consul/find-sidecar.js';
import { errorMessage } from './errors.js';
import { haproxyVersion } from './haproxy/check.js';
import { ManagedFiles, createRunDir, removeRunDir } from './haproxy/files.js';
import { HaproxyProcess } from './haproxy/process.js';
import { CONFIG_FILE, Reconciler } from './reconcile.js';
import { SnapshotState } from './snapshot/fold.js';
import { SidecarWatches } from './snapshot/watches.js';
import type { Logger } from './telemetry/logger.js';
import { VERSION } from './version.js';

export const MASTER_SOCKET = 'master.sock';

export interface RunDependencies {
  logger: Logger;
  /** Replaces the HTTP client (tests). */
  consul?: ConsulAgentApi;
}

export async function run(config: Config, signal: AbortSignal, deps: RunDependencies): Promise<void> {
  const { logger } = deps;
  const log = {
    main: logger.child({ component: 'main' }),
    consul: logger.child({ component: 'consul' }),
    haproxy: logger.child({ component: 'haproxy' }),
    reconcile: logger.child({ component: 'reconcile' }),
  };
  log.main.warn('intentions are not enforced by this version: every client with a certificate from the Consul CA is accepted');

  const ownClient = deps.consul === undefined
    ? new ConsulHttpClient({
      address: config.consul.address,
      ...(config.consul.token !== undefined && { token: config.consul.token }),
      ...(config.consul.tls !== undefined && { tls: config.consul.tls }),
    })
    : undefined;
  const consul = deps.consul ?? (ownClient as ConsulHttpClient);
  try {
    await runSidecar(config, consul, signal, log);
  } finally {
    await ownClient?.close();
  }
}

type ComponentLoggers = Record<'main' | 'consul' | 'haproxy' | 'reconcile', Logger>;

async function runSidecar(config: Config, consul: ConsulAgentApi, signal: AbortSignal, log: ComponentLoggers): Promise<void> {
  const haproxyRelease = await haproxyVersion(config.haproxyBin);
  const agent = await consul.agentSelf(signal);
  const proxy = await findSidecar(consul, { serviceId: config.sidecarFor, tag: config.sidecarForTag }, signal);
  log.main.info({ version: VERSION, haproxy: haproxyRelease, consul: consul.address, datacenter: agent.datacenter, node: agent.nodeName, proxyId: proxy.id, service: proxy.destinationServiceName }, 'starting sidecar');

  // Fetch every part once before starting: what cannot work (a bad proxy config, a token without
  // the rights to the leaf) stops the start with a clear error instead of retrying forever.
  const state = new SnapshotState(agent.datacenter);
  const first = await consul.proxyRegistration(proxy.id, {}, signal);
  const [leaf, roots] = await Promise.all([consul.leaf(first.value.serviceName, {}, signal), consul.roots({}, signal)]);
  state.apply({ kind: 'registration', value: first.value });
  state.apply({ kind: 'leaf', value: leaf.value });
  state.apply({ kind: 'roots', value: roots.value });

  const runDir = await createRunDir(config.cfgBasePath);
  log.main.info({ runDir }, 'created run directory');
  const haproxy = new HaproxyProcess({
    haproxyBin: config.haproxyBin,
    runDir,
    cfgPath: join(runDir, CONFIG_FILE),
    masterSocket: join(runDir, MASTER_SOCKET),
    logger: log.haproxy,
  });
  const reconciler = new Reconciler({ state, haproxy, files: new ManagedFiles(runDir), haproxyBin: config.haproxyBin, runDir, logger: log.reconcile });

  const intake = new AbortController();
  const onAbort = (): void => intake.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const watches = new SidecarWatches({
    api: consul,
    proxyId: proxy.id,
    signal: intake.signal,
    emit: (event) => {
      if (state.apply(event)) reconciler.notify();
    },
    onError: ({ watch, error, attempt }) => {
      const level = attempt > 3 ? 'error' : 'warn';
      log.consul[level]({ watch, attempt, err: errorMessage(error), code: (error as { code?: string }).code }, 'watch failed; keeping the last good value and retrying');
    },
  });

  const loop = new AbortController();
  try {
    watches.start();
    const reconciling = reconciler.run(loop.signal);
    reconciler.firstApplied.then(() => log.main.info({ runDir }, 'sidecar ready'), () => {});
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
    log.main.info({ reason: errorMessage(signal.reason) }, 'shutting down');
    intake.abort(signal.reason);
    await watches.stopped();
    loop.abort(signal.reason);
    await reconciling;
  } finally {
    signal.removeEventListener('abort', onAbort);
    intake.abort();
    loop.abort();
    await haproxy.stop().catch((err: unknown) => log.main.error({ err: errorMessage(err) }, 'stopping haproxy failed'));
    await removeRunDir(runDir).catch((err: unknown) => log.main.error({ err: errorMessage(err), runDir }, 'removing the run directory failed'));
    log.main.info('stopped');
  }
}
