/**
 * haproxy-connect's own metrics, one registry per run (no module-global state), in Prometheus
 * text format. Every name starts with `haproxy_connect_`, so it never collides with HAProxy's own
 * families (`haproxy_process_*`, `haproxy_frontend_*`, ...) that the stats server appends.
 *
 * Events (a watch failed, a reload happened, a connection was authorized) are pushed in through
 * the methods below; states (readiness, leaf expiry, HAProxy's process state) are read from
 * `MetricsSources` at scrape time. Every label takes values from a fixed set.
 */
import { type Counter, type Gauge, type Histogram, Registry } from './metric-families.js';
import type { AuthorizationDecision } from '../domain/intentions.js';
import type { SnapshotEvent } from '../domain/snapshot.js';
import { RELOAD_REASON_CATEGORIES, reloadReasonCategories } from './reload-reasons.js';
import {
  METRIC_PREFIX,
  WATCH_KINDS,
  WATCH_STATES,
  HAPROXY_STATES,
  RUNTIME_OP_KINDS,
  RUNTIME_OP_RESULTS,
  DECISION_RESULTS,
  APPLY_METHODS,
  DECISION_BUCKETS_SECONDS,
  APPLY_BUCKETS_SECONDS,
  MS_PER_SECOND,
  US_PER_SECOND,
  watchKind,
  EVENT_WATCH,
  DROPPED_KINDS,
  type BuildInfo,
  type MetricsSources,
  type ActivatedEvent,
  type RuntimeAppliedEvent,
  type DroppedEvent,
} from './metric-labels.js';

export { METRIC_PREFIX, watchKind, type WatchKind, type ActivatedEvent, type BuildInfo, type DroppedEvent, type MetricsSources, type RuntimeAppliedEvent } from './metric-labels.js';

export class SidecarMetrics {
  readonly registry = new Registry();
  /** Consecutive failures per running watch name (0 after an answer); absent = no answer yet. */
  readonly #watchFailures = new Map<string, number>();

  readonly #watchErrors: Counter;
  readonly #watchUpdates: Counter;
  readonly #applies: Counter;
  readonly #applyDuration: Histogram;
  readonly #reloads: Counter;
  readonly #runtimeOps: Counter;
  readonly #decisions: Counter;
  readonly #decisionDuration: Histogram;
  readonly #haproxyExits: Counter;
  readonly #droppedNow: Gauge;
  readonly #droppedTotal: Counter;
  readonly #scrapeSuccess: Gauge;
  readonly #scrapeDuration: Gauge;

  constructor(build: BuildInfo, sources: MetricsSources, now: () => number = Date.now) {
    const name = (suffix: string): string => `${METRIC_PREFIX}${suffix}`;

    this.registry
      .gauge({
        name: name('build_info'),
        help: 'Always 1; the labels name the versions of haproxy-connect, HAProxy and Node.js',
        labelNames: ['version', 'haproxy_version', 'nodejs_version'],
      })
      .set({ version: build.version, haproxy_version: build.haproxyVersion, nodejs_version: build.nodeVersion }, 1);

    this.registry.gauge({
      name: name('ready'),
      help: '1 while the sidecar serves with a valid leaf and CA roots (what /ready answers 200 for)',
      collect: (f) => {
        f.set({}, sources.ready() ? 1 : 0);
      },
    });

    this.registry.gauge({
      name: name('haproxy_state'),
      help: 'State of the HAProxy master-worker process as the supervisor sees it (1 for the current state)',
      labelNames: ['state'],
      collect: (f) => {
        const current = sources.haproxyState();
        for (const state of Object.keys(HAPROXY_STATES)) f.set({ state }, state === current ? 1 : 0);
      },
    });

    this.#droppedNow = this.registry.gauge({
      name: name('dropped_items'),
      help: 'Items left out of the HAProxy configuration because their data from Consul cannot be used (everything else keeps updating), by kind',
      labelNames: ['kind'],
    });
    this.#droppedTotal = this.registry.counter({
      name: name('dropped_items_total'),
      help: 'Times an item was left out of the HAProxy configuration (or left out for a new reason), by kind',
      labelNames: ['kind'],
    });
    for (const kind of DROPPED_KINDS) {
      this.#droppedNow.set({ kind }, 0);
      this.#droppedTotal.inc({ kind }, 0);
    }

    this.#haproxyExits = this.registry.counter({
      name: name('haproxy_unexpected_exits_total'),
      help: 'HAProxy master processes that exited without being asked to (each is restarted with backoff)',
    });

    this.registry.gauge({
      name: name('leaf_certificate_expiry_seconds'),
      help: 'Seconds until the leaf certificate expires (negative once expired)',
      collect: (f) => {
        f.set({}, (Date.parse(sources.leafValidBefore()) - now()) / MS_PER_SECOND);
      },
    });

    this.registry.gauge({
      name: name('ca_roots'),
      help: 'CA root certificates in the trust bundle',
      collect: (f) => {
        f.set({}, sources.caRoots());
      },
    });

    const watchFailures = this.#watchFailures;
    this.registry.gauge({
      name: name('consul_watches'),
      help: 'Running Consul watches by kind and state: ok (last request answered), failing (last request failed; retried with backoff), pending (no answer yet)',
      labelNames: ['watch', 'state'],
      collect: (f) => {
        const running = new Set(sources.runningWatches());
        for (const watch of [...watchFailures.keys()]) if (!running.has(watch)) watchFailures.delete(watch);
        const counts = new Map<string, number>();
        for (const watch of running) {
          const failures = watchFailures.get(watch);
          const state = failures === undefined ? 'pending' : failures > 0 ? 'failing' : 'ok';
          const key = `${watchKind(watch)}/${state}`;
          counts.set(key, (counts.get(key) ?? 0) + 1);
        }
        for (const watch of WATCH_KINDS) {
          for (const state of WATCH_STATES) f.set({ watch, state }, counts.get(`${watch}/${state}`) ?? 0);
        }
      },
    });
    this.#watchErrors = this.registry.counter({
      name: name('consul_watch_errors_total'),
      help: 'Failed Consul watch requests (the last good value keeps serving), by watch kind',
      labelNames: ['watch'],
    });
    this.#watchUpdates = this.registry.counter({
      name: name('consul_watch_updates_total'),
      help: 'Changes received from Consul watches, by watch kind',
      labelNames: ['watch'],
    });

    this.#applies = this.registry.counter({
      name: name('config_applies_total'),
      help: 'Configuration changes applied to HAProxy: through a reload (or start) or through the runtime API, ok or failed',
      labelNames: ['method', 'result'],
    });
    this.#applyDuration = this.registry.histogram({
      name: name('config_apply_duration_seconds'),
      help: 'Time to apply a configuration change (a reload includes writing files and haproxy -c)',
      labelNames: ['method'],
      buckets: APPLY_BUCKETS_SECONDS,
    });
    this.#reloads = this.registry.counter({
      name: name('haproxy_reloads_total'),
      help: 'HAProxy starts and hitless reloads by reason category; a reload with reasons of several categories counts once in each',
      labelNames: ['reason'],
    });
    this.#runtimeOps = this.registry.counter({
      name: name('runtime_operations_total'),
      help: 'Runtime API operations by kind and result (pending: a server deletion waiting for its connections)',
      labelNames: ['op', 'result'],
    });

    this.#decisions = this.registry.counter({
      name: name('intention_decisions_total'),
      help: 'Connections authorized by the intentions agent (allow, deny, l7: an L7 policy decides each request, error: no identity could be read, denied), and requests of L7 policies the agent decides (request_allow, request_deny)',
      labelNames: ['result'],
    });
    this.#decisionDuration = this.registry.histogram({
      name: name('intention_decision_duration_seconds'),
      help: 'Time the intentions agent took to decide about one connection',
      buckets: DECISION_BUCKETS_SECONDS,
    });
    this.registry.gauge({
      name: name('spoe_connections'),
      help: 'Open SPOE connections from HAProxy to the intentions agent (0 when intentions are not enforced)',
      collect: (f) => {
        f.set({}, sources.spoe()?.connections ?? 0);
      },
    });
    this.registry.counter({
      name: name('spoe_errors_total'),
      help: 'SPOE connections closed for a protocol error or timeout (protocol), and verdicts the handler failed to give (handler)',
      labelNames: ['kind'],
      collect: (f) => {
        const spoe = sources.spoe();
        f.reset();
        if (spoe === undefined) return;
        f.inc({ kind: 'protocol' }, spoe.protocolErrors);
        f.inc({ kind: 'handler' }, spoe.handlerErrors);
      },
    });

    this.#scrapeSuccess = this.registry.gauge({
      name: name('haproxy_scrape_success'),
      help: "1 when HAProxy's own metrics (appended below) could be read for this scrape, else 0",
    });
    this.#scrapeDuration = this.registry.gauge({
      name: name('haproxy_scrape_duration_seconds'),
      help: "Time taken to read HAProxy's own metrics for this scrape",
    });

    this.registry.gauge({
      name: name('process_resident_memory_bytes'),
      help: "Resident memory of the haproxy-connect process (not HAProxy's)",
      collect: (f) => {
        f.set({}, process.memoryUsage.rss());
      },
    });
    this.registry.gauge({
      name: name('process_heap_used_bytes'),
      help: 'V8 heap in use by the haproxy-connect process',
      collect: (f) => {
        f.set({}, process.memoryUsage().heapUsed);
      },
    });
    this.registry.counter({
      name: name('process_cpu_seconds_total'),
      help: 'User and system CPU time of the haproxy-connect process',
      collect: (f) => {
        const usage = process.cpuUsage();
        f.reset();
        f.inc({}, (usage.user + usage.system) / US_PER_SECOND);
      },
    });
    this.registry
      .gauge({
        name: name('process_start_time_seconds'),
        help: 'Start time of the haproxy-connect process, in seconds since the Unix epoch',
      })
      .set({}, Math.round((Date.now() - process.uptime() * MS_PER_SECOND) / MS_PER_SECOND));

    // Every series exists from the start, so rate() and absent-value alerts work before the first event.
    for (const watch of WATCH_KINDS) {
      this.#watchErrors.inc({ watch }, 0);
      this.#watchUpdates.inc({ watch }, 0);
    }
    for (const method of APPLY_METHODS) {
      for (const result of ['ok', 'failed']) this.#applies.inc({ method, result }, 0);
      this.#applyDuration.zero({ method });
    }
    for (const reason of RELOAD_REASON_CATEGORIES) this.#reloads.inc({ reason }, 0);
    for (const op of Object.keys(RUNTIME_OP_KINDS)) {
      for (const result of Object.values(RUNTIME_OP_RESULTS)) this.#runtimeOps.inc({ op, result }, 0);
    }
    for (const result of DECISION_RESULTS) this.#decisions.inc({ result }, 0);
    this.#scrapeSuccess.set({}, 0);
  }

  /** The Content-Type of `exposition()`. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition of every metric, with states read now. */
  exposition(): string {
    return this.registry.text();
  }

  // --- Consul watches --------------------------------------------------------------------------

  watchFailed(watch: string, attempt: number): void {
    this.#watchFailures.set(watch, attempt);
    this.#watchErrors.inc({ watch: watchKind(watch) });
  }

  watchAnswered(watch: string): void {
    this.#watchFailures.set(watch, 0);
  }

  /** A change folded into the snapshot. */
  snapshotChanged(kind: SnapshotEvent['kind']): void {
    const watch = EVENT_WATCH[kind];
    if (watch !== undefined) this.#watchUpdates.inc({ watch });
  }

  // --- the reconcile loop --------------------------------------------------------------------

  activated(event: ActivatedEvent): void {
    const ok = event.outcome !== 'failed';
    this.#applies.inc({ method: 'reload', result: ok ? 'ok' : 'failed' });
    this.#applyDuration.observe({ method: 'reload' }, event.durationMs / MS_PER_SECOND);
    if (event.outcome !== 'started' && event.outcome !== 'reloaded') return;
    for (const reason of reloadReasonCategories(event.reasons)) this.#reloads.inc({ reason });
  }

  runtimeApplied(event: RuntimeAppliedEvent): void {
    const failed = event.results.some((r) => r.status === 'failed');
    this.#applies.inc({ method: 'runtime', result: failed ? 'failed' : 'ok' });
    this.#applyDuration.observe({ method: 'runtime' }, event.durationMs / MS_PER_SECOND);
    for (const result of event.results) this.#runtimeOps.inc({ op: result.op.kind, result: RUNTIME_OP_RESULTS[result.status] });
  }

  dropped(event: DroppedEvent): void {
    for (const kind of DROPPED_KINDS) {
      this.#droppedNow.set({ kind }, event.current.filter((d) => d.kind === kind).length);
      const added = event.added.filter((d) => d.kind === kind).length;
      if (added > 0) this.#droppedTotal.inc({ kind }, added);
    }
  }

  haproxyExitedUnexpectedly(): void {
    this.#haproxyExits.inc();
  }

  // --- intentions --------------------------------------------------------------------------------

  /** The authorizer's `onDecision` hook. */
  readonly intentionDecided = (decision: AuthorizationDecision): void => {
    this.#decisions.inc({ result: decision.result });
    this.#decisionDuration.observe({}, decision.durationMs / MS_PER_SECOND);
  };

  // --- the stats server --------------------------------------------------------------------------

  haproxyScraped(success: boolean, durationMs: number): void {
    this.#scrapeSuccess.set({}, success ? 1 : 0);
    this.#scrapeDuration.set({}, durationMs / MS_PER_SECOND);
  }
}
