/** Consul's name for the namespace and the admin partition when none is given (OSS has only these). */
export const DEFAULT_NAMESPACE = 'default';
export const DEFAULT_PARTITION = 'default';

/** A plain service registered on the local agent (PUT /v1/agent/service/register) with one HTTP check. */
export interface ServiceDefinition {
  id: string;
  name: string;
  /** Empty: the agent's node address. */
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  check: {
    /** The URL the agent polls; 2xx is passing. */
    http: string;
    /** Go durations, as Consul takes them: `10s`, `1m`. */
    interval: string;
    timeout: string;
    /** Consul removes the service after its check has been critical this long (a daemon that died without deregistering). */
    deregisterCriticalServiceAfter: string;
  };
}
