/**
 * Control-plane case "daemon memory", two figures for the daemon's own memory (HAProxy's is its own row):
 * - daemon-idle-memory: SIDECARS daemons with UPSTREAMS upstreams each on the testbed's real Consul
 *   agent, side by side (and one more with LEAN_FLAGS, reported apart), idle IDLE_MS after they are ready. Per daemon: RSS, the part of it that is
 *   its own (anonymous memory: heap, stacks, malloc) and the part that is file-backed (the node
 *   binary's and libraries' pages, shared by every Node process on the host), PSS (RSS with shared
 *   pages divided among the processes that map them: what one more sidecar costs the host), and the
 *   V8 heap in use (its `haproxy_connect_process_heap_used_bytes`).
 * - daemon-churn-memory: then a churn (churnSecondsOf: 60 s full, 20 s quick, or BENCH_CHURN_S) of changes to the first daemon (an upstream instance
 *   registered and deregistered, an intention to it flipped between allow and deny, in turn; every
 *   CA_EVERY_S (BENCH_CA_EVERY_S) a rotation of Consul's CA, which gives every daemon a new root and a new leaf), its RSS
 *   sampled every SAMPLE_MS: the least-squares slope over the second half (after warm-up) in MiB per
 *   hour, with the first and last samples. A leak shows as a slope that does not shrink with time.
 * The timing columns say how long each phase took (the last daemon ready after the first start; the
 * churn); the memory figures are in the description.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { rotateConnectCa } from '../../devtools/certs.js';
import { registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import type { Started } from '../lib/procs.js';
import { procKiB as kib, processTree, rssKiB } from '../lib/proc-stats.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';

const NAME = 'daemon-memory';
const IDLE = 'daemon-idle-memory';
const CHURN = 'daemon-churn-memory';
const SIDECARS = 4;
const UPSTREAMS = 10;
const IDLE_MS = 20_000;
const SAMPLE_MS = 5_000;
const READY_TIMEOUT_MS = 90_000;
const MIB = 1024;
/** A slope over a shorter churn measures the young generation and the caches filling, not a leak (measured: RSS rises for 1–2 minutes, then levels). */
const MIN_SLOPE_MS = 300_000;
/**
 * A CA rotation (new root and leaf for every daemon) this often during the churn, the first one after
 * this long (none in the quick profile's 20 s: the ca-rotation case that follows counts reloads from a
 * first rotation). Consul keeps rotated-out roots for twice the leaf TTL, so the trust bundle grows
 * with the rotations: the figure says how many roots it ended with. BENCH_CA_EVERY_S overrides it
 * (caEverySecondsOf; 0: no rotation, the churn of endpoints and intentions alone).
 */
const CA_EVERY_S = 120;

/** Seconds between CA rotations in the churn: BENCH_CA_EVERY_S when set (0: none), else CA_EVERY_S. */
export function caEverySecondsOf(override: string | undefined): number {
  if (override === undefined || override === '') return CA_EVERY_S;
  const seconds = Number(override);
  if (!Number.isInteger(seconds) || (seconds !== 0 && seconds < 30)) throw new Error(`BENCH_CA_EVERY_S=${override}: whole seconds, 0 (no rotation) or at least 30`);
  return seconds;
}
/**
 * V8's lite mode (it implies --jitless and --optimize-for-size; Node takes it on its command line only):
 * the least memory measured for a daemon, with slower JavaScript (the SPOE decisions run interpreted).
 */
const LEAN_FLAGS = ['--lite-mode'];

/** A daemon's RSS, its own and file-backed parts and its PSS, in MiB. */
function memoryOf(pid: number): { rss: number; anon: number; file: number; pss: number } {
  return {
    rss: kib(pid, 'status', 'VmRSS') / MIB,
    anon: kib(pid, 'status', 'RssAnon') / MIB,
    file: kib(pid, 'status', 'RssFile') / MIB,
    pss: kib(pid, 'smaps_rollup', 'Pss') / MIB,
  };
}

async function heapUsedMiB(statsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${statsPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  return Number(/^haproxy_connect_process_heap_used_bytes (\S+)$/m.exec(text)?.[1] ?? Number.NaN) / 1024 / 1024;
}

const range = (values: readonly number[]): string => {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return lo.toFixed(1) === hi.toFixed(1) ? lo.toFixed(1) : `${lo.toFixed(1)}–${hi.toFixed(1)}`;
};

/** Least-squares slope of (t ms, y) in y per hour. */
function slopePerHour(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  const mt = points.reduce((s, [t]) => s + t, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const num = points.reduce((s, [t, y]) => s + (t - mt) * (y - my), 0);
  const den = points.reduce((s, [t]) => s + (t - mt) ** 2, 0);
  return den === 0 ? 0 : (num / den) * 3_600_000;
}

/** The churn's length: BENCH_CHURN_S when set (a long leak check: `BENCH_CHURN_S=3600 ... --cases daemon-memory`), else 60 s (full) or 20 s (quick). */
export function churnSecondsOf(profile: 'full' | 'quick', override: string | undefined): number {
  if (override !== undefined && override !== '') {
    const seconds = Number(override);
    if (!Number.isInteger(seconds) || seconds < 10) throw new Error(`BENCH_CHURN_S=${override}: whole seconds, at least 10`);
    return seconds;
  }
  return profile === 'full' ? 60 : 20;
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const { testbed, registry } = ctx;
  const { agent } = testbed;
  const churnMs = churnSecondsOf(ctx.profile.name, process.env.BENCH_CHURN_S) * 1000;
  const caEveryMs = caEverySecondsOf(process.env.BENCH_CA_EVERY_S) * 1000;
  const ports = await freePorts(2 * UPSTREAMS + 4 * (SIDECARS + 1) + (SIDECARS + 1) * UPSTREAMS);
  const take = (): number => ports.shift() as number;
  const started: Started[] = [];
  const services: string[] = [];
  try {
    for (let i = 0; i < UPSTREAMS; i++) {
      await registerMeshService(agent, { id: `mem-svc${i}`, name: `mem-svc${i}`, port: take(), sidecarPort: take() });
      services.push(`mem-svc${i}`);
    }
    const statsPorts: number[] = [];
    const t0 = performance.now();
    // One more daemon, the same but for LEAN_FLAGS, measured beside the others.
    for (let k = 0; k <= SIDECARS; k++) {
      const upstreams = Array.from({ length: UPSTREAMS }, (_, i) => ({ destinationName: `mem-svc${i}`, localBindPort: take(), protocol: i % 2 === 0 ? 'http' : 'tcp' }));
      await registerMeshService(agent, { id: `mem-web${k}`, name: `mem-web${k}`, port: take(), sidecarPort: take(), upstreams });
      services.push(`mem-web${k}`);
      const statsPort = take();
      take();
      statsPorts.push(statsPort);
      started.push(testbed.startHaproxyConnect(`mem-web${k}`, `mem-web${k}`, ['-stats-addr', `127.0.0.1:${statsPort}`], k === SIDECARS ? LEAN_FLAGS : []));
    }
    const readyMs: number[] = [];
    for (const [k, port] of statsPorts.entries()) {
      await waitFor(
        `mem-web${k} ready (${started[k]?.output().slice(-500)})`,
        async () => ((await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined))?.status === 200 ? true : undefined),
        READY_TIMEOUT_MS,
        50,
      );
      readyMs.push(performance.now() - t0);
    }
    await delay(IDLE_MS);
    const lean = memoryOf(started[SIDECARS]?.pid as number);
    const leanText = `RSS ${range([lean.rss])} MiB (own ${range([lean.anon])}, file-backed ${range([lean.file])}), PSS ${range([lean.pss])} MiB`;
    const daemons = started.slice(0, SIDECARS).map((s) => s.pid);
    const memories = daemons.map(memoryOf);
    const rss = memories.map((m) => m.rss);
    const anon = memories.map((m) => m.anon);
    const file = memories.map((m) => m.file);
    const pss = memories.map((m) => m.pss);
    const heap = await Promise.all(statsPorts.slice(0, SIDECARS).map(heapUsedMiB));
    const haproxy = daemons.map(
      (pid) =>
        processTree(pid)
          .slice(1)
          .reduce((sum, p) => sum + rssKiB(p), 0) / MIB,
    );
    const idleText =
      `${SIDECARS} daemons side by side, ${UPSTREAMS} upstreams each, idle ${IDLE_MS / 1000} s after ready: RSS ${range(rss)} MiB ` +
      `(own ${range(anon)}, file-backed ${range(file)}), PSS ${range(pss)} MiB, V8 heap in use ${range(heap)} MiB; HAProxy RSS ${range(haproxy)} MiB; ` +
      `a fifth daemon with node ${LEAN_FLAGS.join(' ')} beside them: ${leanText}`;
    ctx.log(`${NAME}: ${idleText}`);

    // Churn on the first daemon: an instance of one of its upstreams comes and goes, its intention flips.
    const target = daemons[0] as number;
    const points: Array<[number, number]> = [];
    let changes = 0;
    let rotations = 0;
    let roots = 0;
    const churnStart = performance.now();
    let nextSample = churnStart;
    let nextRotation = caEveryMs === 0 ? Number.POSITIVE_INFINITY : churnStart + caEveryMs;
    for (let i = 0; performance.now() - churnStart < churnMs; i++) {
      if (performance.now() >= nextRotation) {
        roots = (await rotateConnectCa(agent)).allRoots.split('-----BEGIN CERTIFICATE-----').length - 1;
        rotations++;
        nextRotation += caEveryMs;
      }
      const svc = `mem-svc${Math.floor(i / 3) % UPSTREAMS}`;
      // The instance's app port is never dialled; its sidecar port is the endpoint the daemon adds.
      if (i % 3 === 0) await registerMeshService(agent, { id: `${svc}-extra`, name: svc, port: 1, sidecarPort: 20_000 + (i % 1_000) });
      else if (i % 3 === 1) await agent.put(`/v1/agent/service/deregister/${svc}-extra-sidecar-proxy`).then(() => agent.put(`/v1/agent/service/deregister/${svc}-extra`));
      else await agent.put('/v1/config', { Kind: 'service-intentions', Name: 'mem-web0', Sources: [{ Name: svc, Action: i % 2 === 0 ? 'deny' : 'allow' }] });
      changes++;
      if (performance.now() >= nextSample) {
        points.push([performance.now() - churnStart, kib(target, 'status', 'VmRSS') / MIB]);
        nextSample += SAMPLE_MS;
      }
      await delay(100);
    }
    points.push([performance.now() - churnStart, kib(target, 'status', 'VmRSS') / MIB]);
    const churnDone = performance.now() - churnStart;
    const secondHalf = points.filter(([t]) => t >= churnDone / 2);
    const slope = slopePerHour(secondHalf);
    const heapAfter = await heapUsedMiB(statsPorts[0] as number);
    const churnText =
      `${changes} changes (instance added, removed, intention flipped) to one daemon and ${rotations} CA rotations${rotations > 0 ? ` (${roots} roots at the end)` : ''} over ${(churnDone / 1000).toFixed(0)} s: RSS ${points[0]?.[1].toFixed(1)} -> ` +
      `${points.at(-1)?.[1].toFixed(1)} MiB (max ${Math.max(...points.map(([, y]) => y)).toFixed(1)}), ${churnDone >= MIN_SLOPE_MS ? `slope over the second half ${slope.toFixed(1)} MiB/h` : 'no slope: under 5 minutes is warm-up'}; V8 heap in use ${heap[0]?.toFixed(1)} -> ${heapAfter.toFixed(1)} MiB`;
    ctx.log(`${NAME}: ${churnText}`);
    return [summarize(IDLE, idleText, [Math.max(...readyMs.slice(0, SIDECARS))], 0, 0), summarize(CHURN, churnText, [churnDone], 0, 0)];
  } finally {
    await Promise.all(started.map((s) => registry.stop(s)));
    for (const id of services.reverse()) {
      await agent.put(`/v1/agent/service/deregister/${id}-sidecar-proxy`).catch(() => undefined);
      await agent.put(`/v1/agent/service/deregister/${id}`).catch(() => undefined);
    }
    for (let i = 0; i < UPSTREAMS; i++) {
      await agent.put(`/v1/agent/service/deregister/mem-svc${i}-extra-sidecar-proxy`).catch(() => undefined);
      await agent.put(`/v1/agent/service/deregister/mem-svc${i}-extra`).catch(() => undefined);
    }
    await agent.fetch('/v1/config/service-intentions/mem-web0', { method: 'DELETE' }).catch(() => undefined);
  }
}

/**
 * In the quick profile (a smoke test) and on its own (`make bench-memory`: `--cases daemon-memory`
 * with a 10-minute churn by default): the full profile keeps to its 10 minutes without it.
 */
export const daemonMemory: ControlPlaneCase = { name: NAME, produces: [IDLE, CHURN], repeats: () => 1, profiles: ['quick'], run };
