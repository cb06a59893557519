/**
 * The intake part: the Consul watches of one sidecar. Each answer goes to `onEvent` (the
 * composition root folds it into the snapshot and fans it out); a failed watch keeps its last good
 * value and retries, a throwing consumer drops that one answer. stop() ends every watch and waits
 * for them: nothing reaches the snapshot after it.
 */
import type { ConsulAgentApi } from '../consul/api.js';
import type { SnapshotEvent } from '../domain/snapshot.js';
import { HaproxyConnectError, errorMessage, isHaproxyConnectError } from '../errors.js';
import type { Logger } from '../logger.js';
import { SidecarWatches } from '../snapshot/watches.js';
import { routeMatchLines } from '../haproxy/render-routes.js';
import type { Chain } from '../domain/snapshot.js';

/**
 * Refuses a chain with a route HAProxy cannot take (a value no ACL can carry, too many
 * alternatives for its lines): the upstream keeps its last good chain, and the error names the
 * upstream and the route.
 */
export function checkChainRoutes(upstreamKey: string, chain: Chain): void {
  (chain.routes ?? []).forEach((route, k) => {
    try {
      routeMatchLines(route.match, k);
    } catch (err) {
      throw new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `discovery chain of upstream ${upstreamKey}: route ${k} cannot be configured in HAProxy: ${errorMessage(err)}`);
    }
  });
}

export interface IntakeOptions {
  consul: ConsulAgentApi;
  datacenter: string;
  proxyId: string;
  watchIntentions: boolean;
  onEvent: (event: SnapshotEvent) => void;
  metrics?: { watchAnswered(watch: string): void; watchFailed(watch: string, attempt: number): void };
  logger: { main: Logger; consul: Logger };
}

export interface IntakePart {
  running(): string[];
  stop(reason?: unknown): Promise<void>;
}

export function startIntake(options: IntakeOptions): IntakePart {
  const { logger: log, metrics } = options;
  const intake = new AbortController();
  const watches = new SidecarWatches({
    api: options.consul,
    datacenter: options.datacenter,
    proxyId: options.proxyId,
    signal: intake.signal,
    watchIntentions: options.watchIntentions,
    checkChain: checkChainRoutes,
    emit: options.onEvent,
    onSuccess: (watch) => metrics?.watchAnswered(watch),
    onError: ({ watch, error, attempt, kind, upstreams }) => {
      const fields = { watch, err: errorMessage(error), code: (error as { code?: string }).code, ...(upstreams !== undefined && { upstreams }) };
      if (kind === 'consumer') {
        const refused = isHaproxyConnectError(error, 'CONSUL_RESPONSE_INVALID');
        log.main.error({ ...fields, ...(!refused && { stack: error.stack }) }, 'applying an answer from Consul failed; that answer is dropped and the watch goes on');
        return;
      }
      metrics?.watchFailed(watch, attempt);
      log.consul[attempt > 3 ? 'error' : 'warn']({ ...fields, attempt }, 'watch failed; keeping the last good value and retrying');
    },
  });
  watches.start();
  return {
    running: () => watches.running(),
    stop: async (reason) => {
      intake.abort(reason);
      await watches.stopped();
    },
  };
}
