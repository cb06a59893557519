/**
 * What the L7 intention cases share (l7-permission-change, l7-source-move, intention-scale): the
 * destination sidecar's apply counters, a background keep-alive probe, the denial Envoy answers,
 * and the destination's rendered L7 rules.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RenderedL7, renderedL7, type ServiceIntentionsEntry } from '../lib/l7-path.js';
import { sumSamples } from '../lib/prometheus.js';
import { runDirBinding } from '../lib/run-dirs.js';
import type { ControlPlaneContext } from './case.js';
import type { MeshPair } from './mesh-pair.js';
import type { Probe, ProbeReply } from './probe.js';

/** Envoy's RBAC denial, as the sidecar answers it (src/haproxy/render-permissions.ts). */
export const RBAC_DENIED_BODY = 'RBAC: access denied';
/** Longer than a reload may wait for quiet (src/reconcile/reload-quiet.ts: 150 ms, 1 s at most) plus the reload. */
export const SETTLE_MS = 1_500;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The destination sidecar's reloads, runtime changes and time spent reloading, so far. */
export interface Applies {
  reloads: number;
  /** Reloads counted under the `intentions` reason category (`haproxy_connect_haproxy_reloads_total`). */
  intentionReloads: number;
  runtime: number;
  /** Answers of the intentions watch folded into the sidecar's snapshot (`haproxy_connect_consul_watch_updates_total{watch="intentions"}`). */
  intentionUpdates: number;
  /** Sum of the reloads' apply durations (files, `haproxy -c`, the reload), seconds. */
  reloadSeconds: number;
}

export async function destinationApplies(pair: MeshPair): Promise<Applies> {
  const text = await pair.destinationMetrics();
  const applied = 'haproxy_connect_config_applies_total';
  return {
    reloads: sumSamples(text, applied, { method: 'reload' }),
    intentionReloads: sumSamples(text, 'haproxy_connect_haproxy_reloads_total', { reason: 'intentions' }),
    runtime: sumSamples(text, applied, { method: 'runtime' }),
    intentionUpdates: sumSamples(text, 'haproxy_connect_consul_watch_updates_total', { watch: 'intentions' }),
    reloadSeconds: sumSamples(text, 'haproxy_connect_config_apply_duration_seconds_sum', { method: 'reload' }),
  };
}

/**
 * Polls the destination's counters (every 10 ms; a scrape waits while the daemon's event loop is
 * busy) until a reload after `before` is counted. Resolves with `performance.now()` then, and when
 * the scrapes first showed the new intentions folded into the sidecar's snapshot (Consul's answer
 * received and parsed).
 */
export async function untilReloaded(pair: MeshPair, before: Applies, timeoutMs: number, what: string): Promise<{ reloadedAt: number; receivedAt: number }> {
  const deadline = performance.now() + timeoutMs;
  let receivedAt: number | undefined;
  while (performance.now() < deadline) {
    const now = await destinationApplies(pair);
    const at = performance.now();
    if (now.intentionUpdates > before.intentionUpdates) receivedAt ??= at;
    if (now.reloads > before.reloads) return { reloadedAt: at, receivedAt: receivedAt ?? at };
    await sleep(10);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for the destination sidecar to reload (${what})`);
}

/** Polls until the intentions watch answered after `before`; resolves with `performance.now()` then. */
export async function untilIntentionsReceived(pair: MeshPair, before: Applies, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if ((await destinationApplies(pair)).intentionUpdates > before.intentionUpdates) return performance.now();
    await sleep(10);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for the destination sidecar to receive the intentions`);
}

/** Writes a `service-intentions` entry; returns how long Consul took to answer the PUT (ms). */
export async function writeIntentions(ctx: ControlPlaneContext, entry: ServiceIntentionsEntry): Promise<number> {
  const t0 = performance.now();
  const res = await ctx.testbed.agent.fetch('/v1/config', { method: 'PUT', body: JSON.stringify(entry) });
  const text = await res.text();
  if (!res.ok) throw new ConsulRefused(res.status, text);
  return performance.now() - t0;
}

/** Consul answered a write with an error status. */
export class ConsulRefused extends Error {
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`Consul refused the write: ${status} ${body.trim().slice(0, 500)}`);
    this.status = status;
    this.body = body;
  }
}

/** `allow` a 200, `deny` Envoy's 403; anything else (no response, another status or body) is `unexpected`. */
export function verdictOf(reply: ProbeReply): 'allow' | 'deny' | 'unexpected' {
  if (reply.status === 200) return 'allow';
  if (reply.status === 403 && reply.body === RBAC_DENIED_BODY) return 'deny';
  return 'unexpected';
}

/** A reply for a log line: `503 "<body>"`, or `no response (<error>)`. */
export function describeReply(reply: ProbeReply): string {
  return reply.status === undefined ? `no response (${reply.error ?? 'unknown'})` : `${reply.status} ${JSON.stringify((reply.body ?? '').slice(0, 80))}`;
}

/**
 * Requests `path` until its verdict is `want`; throws after `timeoutMs`. Returns the wanted reply
 * and the unexpected replies that came meanwhile (errors: the old verdict is not one), described.
 */
export async function untilVerdict(probe: Probe, path: string, want: 'allow' | 'deny', timeoutMs: number): Promise<{ at: number; unexpected: number; unexpectedReplies: string[] }> {
  const deadline = performance.now() + timeoutMs;
  const unexpectedReplies: string[] = [];
  while (performance.now() < deadline) {
    const reply = await probe.ask(path);
    const verdict = verdictOf(reply);
    if (verdict === want) return { at: reply.at, unexpected: unexpectedReplies.length, unexpectedReplies };
    if (verdict === 'unexpected') {
      unexpectedReplies.push(describeReply(reply));
      await sleep(1); // do not spin on a refused port
    }
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for GET ${path} to be ${want === 'allow' ? 'served' : 'denied'}`);
}

/** `count` requests of `path`; returns the replies that did not get `want`, described. */
export async function disagreeing(probe: Probe, path: string, want: 'allow' | 'deny', count: number): Promise<string[]> {
  const wrong: string[] = [];
  for (let i = 0; i < count; i++) {
    const reply = await probe.ask(path);
    if (verdictOf(reply) !== want) wrong.push(describeReply(reply));
  }
  return wrong;
}

/**
 * A keep-alive probe of `/` running in the background (its own connection) until stopped: the
 * traffic that must keep being served while the intentions change. `stop` resolves with its
 * requests and failures (any answer but a 200).
 */
export function backgroundProbe(probe: Probe): { stop(): Promise<{ requests: number; failed: number }> } {
  const baseline = { requests: probe.requests, failed: probe.failed };
  let running = true;
  const loop = (async () => {
    while (running) {
      const answer = await probe.get();
      if (answer.body === undefined) await sleep(1);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { requests: probe.requests - baseline.requests, failed: probe.failed - baseline.failed };
    },
  };
}

/** The destination sidecar's haproxy.cfg (path and text); throws while it has none. */
export function destinationConfig(ctx: ControlPlaneContext, pair: MeshPair): { path: string; text: string; rendered: RenderedL7 } {
  const dir = runDirBinding(ctx.testbed.runBase, pair.destinationPublicPort);
  if (dir === undefined) throw new Error(`no run directory under ${ctx.testbed.runBase} binds ${pair.destination}'s public port ${pair.destinationPublicPort}`);
  const path = join(dir, 'haproxy.cfg');
  const text = readFileSync(path, 'utf8');
  return { path, text, rendered: renderedL7(text) };
}
