/**
 * Consul's AccessLogs → the access log of each frontend (public listener and upstream listeners).
 * PURE. Which HTTP headers HAProxy captures follows from the template, so a template that reads
 * `%REQ(X-B3-TRACEID)%` gets that header without capturing anything it does not use.
 */
import type { FrontendAccessLog, Mode } from '../haproxy/model.js';
import type { AccessLogs, Upstream } from '../domain/snapshot.js';
import { templateHeaders } from '../domain/access-log-template.js';

/** Consul's (Envoy's) cluster name for the local application. */
export const LOCAL_APP_CLUSTER = 'local_app';

/**
 * Consul's cluster name for an upstream, as Envoy logs it in `upstream_cluster`:
 * `<service>.<namespace>.<dc>.internal.<trust domain>` (`query` instead of `internal` for prepared
 * queries). The default partition is left out, as Consul does.
 */
export function upstreamCluster(upstream: Upstream, localDatacenter: string, trustDomain: string): string {
  const dc = upstream.datacenter === '' ? localDatacenter : upstream.datacenter;
  if (upstream.destinationType === 'prepared_query') return `${upstream.destinationName}.default.${dc}.query.${trustDomain}`;
  return `${upstream.destinationName}.${upstream.destinationNamespace}.${dc}.internal.${trustDomain}`;
}

export function frontendAccessLog(accessLogs: AccessLogs | undefined, mode: Mode, cluster: string): FrontendAccessLog | undefined {
  if (accessLogs === undefined || !accessLogs.enabled) return undefined;
  // TCP frontends have no headers: every header operator renders as null there.
  const headers = mode === 'http' ? templateHeaders(accessLogs.format) : { request: [], response: [] };
  return { cluster, requestHeaders: headers.request, responseHeaders: headers.response };
}
