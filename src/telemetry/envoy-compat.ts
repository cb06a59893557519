/**
 * The Envoy-compatible series of /metrics: the names and labels the Consul UI's Prometheus
 * metrics provider queries (Consul 1.16.2, agent/uiserver/dist/assets/metrics-providers/
 * prometheus-*.js), computed from HAProxy's own counters and from the access records the daemon
 * receives. An addition: haproxy-connect's and HAProxy's own families are served unchanged.
 *
 * - Counters: translated from HAProxy's exporter at scrape time (PURE: `envoyCounters`). Request
 *   counts by response class, completed requests, connections, bytes, connect failures, per
 *   listener (`envoy_http_downstream_*`, `envoy_tcp_downstream_*`, `envoy_listener_*`) and per
 *   cluster (`envoy_cluster_upstream_*`). A reload starts HAProxy's counters at zero again, which
 *   Prometheus' rate() treats as a counter reset.
 * - Latency histograms (`envoy_http_downstream_rq_time`, `envoy_cluster_upstream_rq_time`, in
 *   milliseconds with Envoy's default buckets): observed from HTTP access records
 *   (`EnvoyLatency`), so they exist while access logs flow (Proxy.AccessLogs enabled).
 *
 * Labels come from envoy-tags.ts (the registration and the chain), never from request data.
 */
import type { AccessRecord } from './access-log-record.js';
import { type EnvoyView, type Labels, clusterOfBackend } from './envoy-tags.js';
import { BucketCounts, Exposition, formatLabels } from './exposition.js';

/** Envoy's default histogram buckets (milliseconds): source/common/stats/histogram_impl.cc. */
export const ENVOY_BUCKETS_MS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

const CODE_CLASSES = ['1', '2', '3', '4', '5'] as const;

/** HAProxy's per-proxy samples: family → proxy → code ('' when the family has no code label) → value. */
export type HaproxyCounters = Map<string, Map<string, Map<string, number>>>;

const HAPROXY_SAMPLE = /^(haproxy_(?:frontend|backend)_[a-z_]+)\{proxy="([^"\\]*)"(?:,code="([^"\\]*)")?\} (\S+)$/;
const WANTED = new Set([
  'haproxy_frontend_http_responses_total',
  'haproxy_frontend_http_requests_total',
  'haproxy_frontend_connections_total',
  'haproxy_frontend_bytes_in_total',
  'haproxy_frontend_bytes_out_total',
  'haproxy_backend_http_responses_total',
  'haproxy_backend_http_requests_total',
  'haproxy_backend_connection_attempts_total',
  'haproxy_backend_connection_errors_total',
  'haproxy_backend_bytes_in_total',
  'haproxy_backend_bytes_out_total',
]);

/** The samples of the families used here, from HAProxy's exporter text. Lines that do not parse are skipped. */
export function parseHaproxyCounters(text: string): HaproxyCounters {
  const out: HaproxyCounters = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith('haproxy_f') && !line.startsWith('haproxy_b')) continue;
    const m = HAPROXY_SAMPLE.exec(line);
    if (m === null) continue;
    const [, family = '', proxy = '', code = '', raw = ''] = m;
    if (!WANTED.has(family)) continue;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    const byProxy = out.get(family) ?? new Map<string, Map<string, number>>();
    out.set(family, byProxy);
    const byCode = byProxy.get(proxy) ?? new Map<string, number>();
    byProxy.set(proxy, byCode);
    byCode.set(code, value);
  }
  return out;
}

function value(counters: HaproxyCounters, family: string, proxy: string, code = ''): number | undefined {
  return counters.get(family)?.get(proxy)?.get(code);
}

function codeTotal(counters: HaproxyCounters, family: string, proxy: string): number | undefined {
  const byCode = counters.get(family)?.get(proxy);
  if (byCode === undefined) return undefined;
  let total = 0;
  for (const v of byCode.values()) total += v;
  return total;
}

const HELP = {
  rqXx: 'Requests by response code class (envoy_response_code_class), from HAProxy: responses of the frontend by status class',
  rqCompleted: 'Requests that got a response, from HAProxy: the frontend responses of every status',
  rqTotal: 'Requests received, from HAProxy: haproxy_frontend_http_requests_total',
  cxTotal: 'Connections accepted, from HAProxy: haproxy_frontend_connections_total',
  cxRx: 'Bytes received from downstream, from HAProxy: haproxy_frontend_bytes_in_total',
  cxTx: 'Bytes sent to downstream, from HAProxy: haproxy_frontend_bytes_out_total',
  upRqXx: 'Upstream responses by code class (envoy_response_code_class), from HAProxy: responses of the backend by status class (including those HAProxy generated)',
  upRqCompleted: 'Upstream requests that got a response, from HAProxy: the backend responses of every status',
  upRqTotal: 'Upstream requests, from HAProxy: haproxy_backend_http_requests_total',
  upCxTotal: 'Upstream connection attempts, from HAProxy: haproxy_backend_connection_attempts_total',
  upCxFail: 'Upstream connections that failed, from HAProxy: haproxy_backend_connection_errors_total',
  upCxRx: 'Bytes received from the upstream, from HAProxy: haproxy_backend_bytes_out_total',
  upCxTx: 'Bytes sent to the upstream, from HAProxy: haproxy_backend_bytes_in_total',
} as const;

/** The Envoy counter families for HAProxy's counters, labelled from `view`. PURE. */
export function envoyCounters(counters: HaproxyCounters, view: EnvoyView, out = new Exposition()): Exposition {
  for (const [proxy, listener] of view.listeners) {
    const labels = { ...view.source, ...listener.labels };
    const add = (name: string, help: string, v: number | undefined, extra: Labels = {}): void => {
      if (v !== undefined) out.add(name, 'counter', help, { ...labels, ...extra }, v);
    };
    const connections = value(counters, 'haproxy_frontend_connections_total', proxy);
    const rx = value(counters, 'haproxy_frontend_bytes_in_total', proxy);
    const tx = value(counters, 'haproxy_frontend_bytes_out_total', proxy);
    if (listener.kind === 'http') {
      for (const cls of CODE_CLASSES) add('envoy_http_downstream_rq_xx', HELP.rqXx, value(counters, 'haproxy_frontend_http_responses_total', proxy, `${cls}xx`), { envoy_response_code_class: cls });
      add('envoy_http_downstream_rq_completed', HELP.rqCompleted, codeTotal(counters, 'haproxy_frontend_http_responses_total', proxy));
      add('envoy_http_downstream_rq_total', HELP.rqTotal, value(counters, 'haproxy_frontend_http_requests_total', proxy));
      add('envoy_http_downstream_cx_total', HELP.cxTotal, connections);
      add('envoy_http_downstream_cx_rx_bytes_total', HELP.cxRx, rx);
      add('envoy_http_downstream_cx_tx_bytes_total', HELP.cxTx, tx);
    } else {
      add('envoy_tcp_downstream_cx_total', HELP.cxTotal, connections);
      add('envoy_tcp_downstream_cx_rx_bytes_total', HELP.cxRx, rx);
      add('envoy_tcp_downstream_cx_tx_bytes_total', HELP.cxTx, tx);
    }
    if (listener.listenerAddress !== undefined) {
      // `listener.<address>.*`: the address tag instead of the resource tags, plus the HCM prefix for HTTP.
      const at = { ...view.source, envoy_listener_address: listener.listenerAddress };
      const addListener = (name: string, help: string, v: number | undefined, extra: Labels = {}): void => {
        if (v !== undefined) out.add(name, 'counter', help, { ...at, ...extra }, v);
      };
      addListener('envoy_listener_downstream_cx_total', HELP.cxTotal, connections);
      if (listener.kind === 'http') {
        const hcm = { envoy_http_conn_manager_prefix: listener.statPrefix };
        for (const cls of CODE_CLASSES) {
          addListener('envoy_listener_http_downstream_rq_xx', HELP.rqXx, value(counters, 'haproxy_frontend_http_responses_total', proxy, `${cls}xx`), { ...hcm, envoy_response_code_class: cls });
        }
        addListener('envoy_listener_http_downstream_rq_completed', HELP.rqCompleted, codeTotal(counters, 'haproxy_frontend_http_responses_total', proxy), hcm);
      }
    }
  }
  const backends = new Set<string>();
  for (const family of ['haproxy_backend_connection_attempts_total', 'haproxy_backend_http_responses_total']) for (const proxy of counters.get(family)?.keys() ?? []) backends.add(proxy);
  for (const proxy of [...backends].sort()) {
    const cluster = clusterOfBackend(view, proxy);
    if (cluster === undefined) continue;
    const labels = { ...view.source, ...cluster.labels };
    const add = (name: string, help: string, v: number | undefined, extra: Labels = {}): void => {
      if (v !== undefined) out.add(name, 'counter', help, { ...labels, ...extra }, v);
    };
    if (cluster.kind === 'http') {
      for (const cls of CODE_CLASSES) add('envoy_cluster_upstream_rq_xx', HELP.upRqXx, value(counters, 'haproxy_backend_http_responses_total', proxy, `${cls}xx`), { envoy_response_code_class: cls });
      add('envoy_cluster_upstream_rq_completed', HELP.upRqCompleted, codeTotal(counters, 'haproxy_backend_http_responses_total', proxy));
      add('envoy_cluster_upstream_rq_total', HELP.upRqTotal, value(counters, 'haproxy_backend_http_requests_total', proxy));
    }
    add('envoy_cluster_upstream_cx_total', HELP.upCxTotal, value(counters, 'haproxy_backend_connection_attempts_total', proxy));
    add('envoy_cluster_upstream_cx_connect_fail', HELP.upCxFail, value(counters, 'haproxy_backend_connection_errors_total', proxy));
    add('envoy_cluster_upstream_cx_rx_bytes_total', HELP.upCxRx, value(counters, 'haproxy_backend_bytes_out_total', proxy));
    add('envoy_cluster_upstream_cx_tx_bytes_total', HELP.upCxTx, value(counters, 'haproxy_backend_bytes_in_total', proxy));
  }
  return out;
}

class MsHistogram extends BucketCounts {
  readonly labels: Labels;

  constructor(labels: Labels) {
    super(ENVOY_BUCKETS_MS);
    this.labels = labels;
  }

  write(out: Exposition, name: string, help: string): void {
    out.addHistogram(name, help, this.labels, this);
  }
}

const DOWNSTREAM_TIME = 'envoy_http_downstream_rq_time';
const UPSTREAM_TIME = 'envoy_cluster_upstream_rq_time';
const TIME_HELP: Record<string, string> = {
  [DOWNSTREAM_TIME]: "Request time in milliseconds, from the request's first byte to the response's last (HAProxy's Ta), from access records",
  [UPSTREAM_TIME]: "Upstream request time in milliseconds, from the full request to the response's last byte (HAProxy's Ta - TR), from access records",
};

/**
 * Latency histograms from HTTP access records, one per listener and cluster of the current view
 * (at most one per HAProxy frontend and backend: bounded by the registration). A histogram whose
 * proxy leaves the view, or whose labels change, is dropped.
 */
export class EnvoyLatency {
  /** `<family> <haproxy proxy>` → histogram. */
  readonly #histograms = new Map<string, MsHistogram>();
  #view: EnvoyView | undefined;

  /** Sets the view records are labelled with; drops histograms it no longer has. */
  setView(view: EnvoyView): void {
    if (view === this.#view) return;
    this.#view = view;
    for (const [key, histogram] of this.#histograms) {
      const [family, proxy = ''] = key.split(' ');
      const labels = family === DOWNSTREAM_TIME ? this.#listenerLabels(proxy) : this.#clusterLabels(proxy);
      if (labels === undefined || formatLabels(labels) !== formatLabels(histogram.labels)) this.#histograms.delete(key);
    }
  }

  observe(record: AccessRecord): void {
    if (record.kind !== 'request' || this.#view === undefined || record.durationMs === undefined) return;
    this.#histogram(DOWNSTREAM_TIME, record.frontend)?.observe(record.durationMs);
    if (record.backend === undefined || record.server === undefined) return;
    this.#histogram(UPSTREAM_TIME, record.backend)?.observe(Math.max(0, record.durationMs - (record.requestMs ?? 0)));
  }

  write(out: Exposition): void {
    for (const [key, histogram] of this.#histograms) {
      const family = key.split(' ')[0] ?? '';
      histogram.write(out, family, TIME_HELP[family] ?? '');
    }
  }

  #listenerLabels(frontend: string): Labels | undefined {
    const view = this.#view;
    const listener = view?.listeners.get(frontend);
    return view === undefined || listener === undefined || listener.kind !== 'http' ? undefined : { ...view.source, ...listener.labels };
  }

  #clusterLabels(backend: string): Labels | undefined {
    const view = this.#view;
    const cluster = view === undefined ? undefined : clusterOfBackend(view, backend);
    return view === undefined || cluster === undefined || cluster.kind !== 'http' ? undefined : { ...view.source, ...cluster.labels };
  }

  /** The histogram of a proxy (created on its first record), or undefined when the proxy is no HTTP listener or cluster. */
  #histogram(family: string, proxy: string): MsHistogram | undefined {
    const key = `${family} ${proxy}`;
    const existing = this.#histograms.get(key);
    if (existing !== undefined) return existing;
    const labels = family === DOWNSTREAM_TIME ? this.#listenerLabels(proxy) : this.#clusterLabels(proxy);
    if (labels === undefined) return undefined;
    const histogram = new MsHistogram(labels);
    this.#histograms.set(key, histogram);
    return histogram;
  }
}

/** The whole Envoy-compatible text: counters from HAProxy's exposition (when read) and the latency histograms. */
export function envoyExposition(haproxyText: string, view: EnvoyView | undefined, latency: EnvoyLatency): string {
  if (view === undefined) return '';
  const out = envoyCounters(parseHaproxyCounters(haproxyText), view);
  latency.write(out);
  return out.text();
}
