/**
 * -stats-service-register: a Consul service `<service>-connect-stats` for the stats server, with an
 * HTTP check on /health, registered on the local agent while the sidecar runs (the name the
 * original tool used, so existing Prometheus `consul_sd_configs` keep finding it).
 */
import { isWildcardHost, type ListenAddress } from '../config/listen-address.js';
import type { ServiceDefinition } from '../domain/consul.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';

/** Where the stats service is registered (the Consul agent client fits it). */
export interface ServiceRegistry {
  registerService(service: ServiceDefinition, signal: AbortSignal): Promise<void>;
  deregisterService(serviceId: string, signal: AbortSignal): Promise<void>;
}

export const STATS_SERVICE_NAME_SUFFIX = '-connect-stats';
export const STATS_SERVICE_ID_SUFFIX = '-stats';
export const STATS_CHECK_INTERVAL = '10s';
export const STATS_CHECK_TIMEOUT = '5s';
/**
 * Cleans up after a daemon that died without deregistering (SIGKILL, OOM). A live daemon
 * re-registers whenever HAProxy comes back from a crash, so a long HAProxy outage cannot lose the
 * service for good. Consul's minimum is 1 minute.
 */
export const STATS_DEREGISTER_CRITICAL_AFTER = '10m';
/** Deregistration on exit must not hold the shutdown up when the agent is gone. */
const DEREGISTER_TIMEOUT_MS = 5_000;

export interface StatsServiceTarget {
  /** The sidecar proxy's service ID (unique on the agent). */
  proxyId: string;
  /** The service the sidecar fronts. */
  serviceName: string;
  listen: ListenAddress;
  version: string;
}

/** The registration: address and port from -stats-addr; the check goes through loopback for a wildcard address. PURE. */
export function statsServiceDefinition(target: StatsServiceTarget): ServiceDefinition {
  const { host, port } = target.listen;
  const wildcard = isWildcardHost(host);
  const checkHost = !wildcard ? (host ?? '') : host === '::' ? '::1' : '127.0.0.1';
  const url = `http://${checkHost.includes(':') ? `[${checkHost}]` : checkHost}:${port}/health`;
  return {
    id: `${target.proxyId}${STATS_SERVICE_ID_SUFFIX}`,
    name: `${target.serviceName}${STATS_SERVICE_NAME_SUFFIX}`,
    // A wildcard listens on every address: let the agent publish its node address.
    address: wildcard ? '' : (host ?? ''),
    port,
    tags: [],
    meta: { proxy_id: target.proxyId, metrics_path: '/metrics', haproxy_connect_version: target.version },
    check: {
      http: url,
      interval: STATS_CHECK_INTERVAL,
      timeout: STATS_CHECK_TIMEOUT,
      deregisterCriticalServiceAfter: STATS_DEREGISTER_CRITICAL_AFTER,
    },
  };
}

export class StatsServiceRegistration {
  readonly definition: ServiceDefinition;
  readonly #consul: ServiceRegistry;
  readonly #log: Logger;
  #registered = false;

  constructor(consul: ServiceRegistry, target: StatsServiceTarget, logger: Logger) {
    this.#consul = consul;
    this.definition = statsServiceDefinition(target);
    this.#log = logger;
  }

  /** Registers (or re-registers) the service; errors propagate (a start error the first time). */
  async register(signal: AbortSignal): Promise<void> {
    await this.#consul.registerService(this.definition, signal);
    if (!this.#registered) this.#log.info({ serviceId: this.definition.id, service: this.definition.name, check: this.definition.check.http }, 'registered the stats service');
    this.#registered = true;
  }

  /** Best effort: logged, never thrown. */
  async deregister(): Promise<void> {
    if (!this.#registered) return;
    this.#registered = false;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${DEREGISTER_TIMEOUT_MS} ms`)), DEREGISTER_TIMEOUT_MS);
    try {
      await this.#consul.deregisterService(this.definition.id, controller.signal);
      this.#log.info({ serviceId: this.definition.id }, 'deregistered the stats service');
    } catch (err) {
      this.#log.error(
        { serviceId: this.definition.id, err: errorMessage(err), removedAfterCritical: STATS_DEREGISTER_CRITICAL_AFTER },
        'cannot deregister the stats service; Consul removes it once its check has been critical long enough',
      );
    } finally {
      clearTimeout(timer);
    }
  }
}
