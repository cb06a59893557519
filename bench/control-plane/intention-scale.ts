/**
 * Control-plane case "intention scale": one destination (`is-dst`, protocol http, a real Consul
 * agent and real sidecars) whose `service-intentions` entry grows from one source to SOURCES + 1:
 * `s00000` ... `s09999`, each with its own L7 policy (a deny on its own path prefix: 10,000
 * distinct policies of one ACL each), plus the probe's source `is-src` with an L4 allow. Before
 * the write, `is-src` had an L7 policy denying MOVED_PATH; the write moves it to the L4 allow.
 * A keep-alive probe of `/` runs through the pair the whole time (it must keep being served).
 *
 * Figures (one run):
 * - intentions-bulk-converged: from the big PUT returning to the first MOVED_PATH request served
 *   (the agent has the new intentions; the epoch changed at runtime);
 * - intentions-bulk-applied: from the big PUT returning to the destination's reload counted in its
 *   metrics (the new ACL chains live: the compiler renders as many of the policies as
 *   MAX_RENDERED_ACLS allows, by policy id, and leaves the others to the agent);
 * - intentions-bulk-move-rendered, intentions-bulk-move-agent: after that, one more write each
 *   that moves `is-src` alone into the policy of an existing source (no new rules: runtime only),
 *   first one HAProxy renders, then one left to the agent -> the first request that policy denies
 *   refused. Each write is the whole entry (Consul's config entries are written whole).
 * Also: the PUTs' durations (Consul's own share), when the sidecar had folded Consul's answer into
 * its snapshot (its intentions watch counter, scraped every 10 ms), reloads per write, the haproxy.cfg size, the
 * rendered policies and ACLs, `haproxy -c` on that file (timed here, on the system-under-test
 * core), the reload's apply duration from the sidecar's histogram, the daemon's RSS and V8 heap in
 * use (its `haproxy_connect_process_heap_used_bytes`) and CPU for the change, and HAProxy's RSS
 * (master + workers), before and after.
 *
 * If Consul refuses an entry that large, the case bisects to the largest entry it accepts and
 * reports that count with Consul's error message (Consul 1.16.2 takes 10,000: a 2.3 MB Raft entry,
 * with a warning in its log only).
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { HAPROXY_BIN } from '../lib/haproxy-fixtures.js';
import { type ConsulPermission, type IntentionSource, renderedPathPrefixes, scaleSource, scaleSourceName, scaleSourcePermissions, serviceIntentions } from '../lib/l7-path.js';
import { cpuNsOf, commandName, processTree, rssKiB } from '../lib/proc-stats.js';
import { sumSamples } from '../lib/prometheus.js';
import { SUT_CORE } from '../profile.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { backgroundProbe, ConsulRefused, destinationApplies, destinationConfig, SETTLE_MS, sleep, untilIntentionsReceived, untilReloaded, untilVerdict, writeIntentions } from './l7-common.js';
import { type MeshPair, startMeshPair } from './mesh-pair.js';
import { Probe } from './probe.js';

const NAME = 'intention-scale';
const CONVERGED = 'intentions-bulk-converged';
const APPLIED = 'intentions-bulk-applied';
const MOVE_RENDERED = 'intentions-bulk-move-rendered';
const MOVE_AGENT = 'intentions-bulk-move-agent';
/** Sources with their own L7 policy. */
export const SOURCES = 10_000;
/** The probe source's policy before the big write: MOVED_PATH denied. */
const MOVED_PATH = '/moved/x';
const PROBE_POLICY: readonly ConsulPermission[] = [
  { Action: 'deny', HTTP: { PathPrefix: '/moved/' } },
  { Action: 'allow', HTTP: { PathPrefix: '/' } },
];
const APPLY_TIMEOUT_MS = 300_000;
/** Bisection stops when the accepted and refused counts are this close (fraction of the refused one). */
const BISECT_RESOLUTION = 0.01;

/** The entry's sources: `count` scale sources, then the probe's source as `probe`. */
function sources(count: number, probe: IntentionSource): IntentionSource[] {
  return [...Array.from({ length: count }, (_, i) => scaleSource(i)), probe];
}

/**
 * The largest count in (accepted, refused) for which `accepts` holds, by bisection down to
 * `resolution` × refused; `accepted` is known to be accepted, `refused` refused. Pure but for `accepts`.
 */
export async function largestAccepted(accepted: number, refused: number, resolution: number, accepts: (count: number) => Promise<boolean>): Promise<number> {
  let lo = accepted;
  let hi = refused;
  while (hi - lo > Math.max(1, Math.floor(refused * resolution))) {
    const mid = Math.floor((lo + hi) / 2);
    if (await accepts(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

interface Memory {
  daemonRssMiB: number;
  daemonHeapMiB: number;
  haproxyRssMiB: number;
  haproxyProcesses: number;
}

async function memoryOf(pair: MeshPair): Promise<Memory> {
  const daemon = pair.destinationSidecar.pid;
  const haproxy = processTree(daemon).filter((pid) => pid !== daemon && commandName(pid) === 'haproxy');
  const heap = sumSamples(await pair.destinationMetrics(), 'haproxy_connect_process_heap_used_bytes');
  return {
    daemonRssMiB: rssKiB(daemon) / 1024,
    daemonHeapMiB: heap / 1024 / 1024,
    haproxyRssMiB: haproxy.reduce((sum, pid) => sum + rssKiB(pid), 0) / 1024,
    haproxyProcesses: haproxy.length,
  };
}

const mib = (n: number): string => n.toFixed(1);
const memoryText = (m: Memory): string => `daemon RSS ${mib(m.daemonRssMiB)} MiB, heap in use ${mib(m.daemonHeapMiB)} MiB; HAProxy RSS ${mib(m.haproxyRssMiB)} MiB (${m.haproxyProcesses} processes)`;

/** `haproxy -c` of the sidecar's own file, pinned to the system-under-test core: ms. */
function timeConfigCheck(cfgPath: string): number {
  const t0 = performance.now();
  execFileSync('taskset', ['-c', String(SUT_CORE), HAPROXY_BIN, '-c', '-q', '-f', cfgPath], { stdio: 'pipe' });
  return performance.now() - t0;
}

/** On-CPU time so far (ns) of the destination daemon, its whole sidecar (with HAProxy) and the Consul agent. */
interface Cpu {
  daemon: number;
  sidecar: number;
  consul: number;
}

function cpuNow(ctx: ControlPlaneContext, pair: MeshPair): Cpu {
  const daemon = pair.destinationSidecar.pid;
  const consul = ctx.testbed.agent.process.pid;
  return { daemon: cpuNsOf([daemon]), sidecar: cpuNsOf(processTree(daemon)), consul: consul === undefined ? Number.NaN : cpuNsOf([consul]) };
}

/** CPU ms since `before` (over the settle period too: the whole cost of a change). */
function cpuSince(ctx: ControlPlaneContext, pair: MeshPair, before: Cpu): Cpu {
  const now = cpuNow(ctx, pair);
  return { daemon: (now.daemon - before.daemon) / 1e6, sidecar: (now.sidecar - before.sidecar) / 1e6, consul: (now.consul - before.consul) / 1e6 };
}

const cpuText = (ms: Cpu): string => `daemon ${ms.daemon.toFixed(0)} ms, whole destination sidecar ${ms.sidecar.toFixed(0)} ms, Consul agent ${ms.consul.toFixed(0)} ms (all its work in that time)`;

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const pair = await startMeshPair(ctx, 'is', { httpDefaults: true, destinationMetrics: true });
  const check = new Probe(pair.upstreamPort);
  const probeSource = (permissions?: readonly ConsulPermission[]): IntentionSource =>
    permissions === undefined ? { Name: pair.source, Action: 'allow' } : { Name: pair.source, Permissions: [...permissions] };
  let background: ReturnType<typeof backgroundProbe> | undefined;
  try {
    // Set-up (not measured): the probe's source under its own L7 policy, rendered.
    await writeIntentions(ctx, serviceIntentions(pair.destination, [probeSource(PROBE_POLICY)]));
    await untilVerdict(check, MOVED_PATH, 'deny', 30_000);
    await sleep(SETTLE_MS);
    const small = destinationConfig(ctx, pair);
    const memoryBefore = await memoryOf(pair);
    ctx.log(`${NAME}: before: haproxy.cfg ${small.text.length} bytes, ${small.rendered.policies.length} L7 policy rendered; ${memoryText(memoryBefore)}`);

    // The big write, with the probe's source moved to an L4 allow.
    background = backgroundProbe(pair.probe);
    let count = SOURCES;
    let refusal = '';
    const big = (n: number) => serviceIntentions(pair.destination, sources(n, probeSource()));
    const before = await destinationApplies(pair);
    const cpuBefore = cpuNow(ctx, pair);
    let putMs: number;
    try {
      putMs = await writeIntentions(ctx, big(count));
    } catch (err) {
      if (!(err instanceof ConsulRefused)) throw err;
      // Consul refused it: the largest entry it takes instead (each attempt is a whole write).
      refusal = `Consul refused ${SOURCES} sources: ${err.status} ${err.body.trim().slice(0, 300)}`;
      ctx.log(`${NAME}: ${refusal}; bisecting`);
      count = await largestAccepted(0, SOURCES, BISECT_RESOLUTION, async (n) => {
        try {
          await writeIntentions(ctx, big(n));
          return true;
        } catch (e) {
          if (e instanceof ConsulRefused) return false;
          throw e;
        }
      });
      putMs = await writeIntentions(ctx, big(count));
    }
    const written = performance.now();
    const [converged, timeline] = await Promise.all([untilVerdict(check, MOVED_PATH, 'allow', APPLY_TIMEOUT_MS), untilReloaded(pair, before, APPLY_TIMEOUT_MS, `${count} sources`)]);
    const convergedMs = converged.at - written;
    const receivedMs = timeline.receivedAt - written;
    const appliedMs = timeline.reloadedAt - written;
    await sleep(SETTLE_MS);
    const after = await destinationApplies(pair);
    const cpuMs = cpuSince(ctx, pair, cpuBefore);
    const bigCfg = destinationConfig(ctx, pair);
    const cfgBytes = statSync(bigCfg.path).size;
    const checkMs = timeConfigCheck(bigCfg.path);
    const memoryAfter = await memoryOf(pair);
    const bigReloads = after.reloads - before.reloads;
    const reloadApplyMs = bigReloads > 0 ? ((after.reloadSeconds - before.reloadSeconds) * 1000) / bigReloads : Number.NaN;
    const scale =
      `${count} sources with their own L7 policy + 1 L4; PUT ${putMs.toFixed(0)} ms; intentions received by the sidecar after ${receivedMs.toFixed(0)} ms; reloads ${bigReloads}; ` +
      `haproxy.cfg ${(cfgBytes / 1024 / 1024).toFixed(2)} MiB with ${bigCfg.rendered.policies.length} of ${count} policies rendered (${bigCfg.rendered.acls} ACLs, ` +
      `${bigCfg.rendered.chainRules} chain rules), the rest left to the agent; haproxy -c ${checkMs.toFixed(0)} ms; reload apply ${reloadApplyMs.toFixed(0)} ms; ` +
      `CPU for the change: ${cpuText(cpuMs)}; ${memoryText(memoryAfter)}` +
      (refusal === '' ? '' : `; ${refusal}`);
    ctx.log(
      `${NAME}: received after ${receivedMs.toFixed(0)} ms, converged after ${convergedMs.toFixed(0)} ms, applied (reloaded) after ${appliedMs.toFixed(0)} ms; ${scale}` +
        (converged.unexpected > 0 ? `; unexpected replies: ${converged.unexpectedReplies.join('; ')}` : ''),
    );

    // Two more writes, each moving the probe's source alone into an existing source's policy (no
    // new rules): one HAProxy renders, then one the agent decides.
    const prefixes = new Set(renderedPathPrefixes(bigCfg.text));
    const renderedIndex = [...Array(count).keys()].find((i) => prefixes.has(`/${scaleSourceName(i)}/`));
    const agentIndex = [...Array(count).keys()].find((i) => !prefixes.has(`/${scaleSourceName(i)}/`));
    const moves: Array<{ result: string; index: number; kind: string }> = [];
    if (renderedIndex !== undefined) moves.push({ result: MOVE_RENDERED, index: renderedIndex, kind: 'rendered' });
    if (agentIndex !== undefined) moves.push({ result: MOVE_AGENT, index: agentIndex, kind: 'agent-decided' });
    const moveResults: Array<{ result: string; description: string; ms: number; reloads: number; unexpected: number }> = [];
    for (const move of moves) {
      const joinedPath = `/${scaleSourceName(move.index)}/x`;
      const beforeMove = await destinationApplies(pair);
      const moveCpuBefore = cpuNow(ctx, pair);
      const movePutMs = await writeIntentions(ctx, serviceIntentions(pair.destination, sources(count, probeSource(scaleSourcePermissions(move.index)))));
      const moveWritten = performance.now();
      const [moved, receivedAt] = await Promise.all([untilVerdict(check, joinedPath, 'deny', APPLY_TIMEOUT_MS), untilIntentionsReceived(pair, beforeMove, APPLY_TIMEOUT_MS)]);
      const moveMs = moved.at - moveWritten;
      await sleep(SETTLE_MS);
      const afterMove = await destinationApplies(pair);
      const moveCpu = cpuSince(ctx, pair, moveCpuBefore);
      const moveReloads = afterMove.reloads - beforeMove.reloads;
      const detail =
        `PUT ${movePutMs.toFixed(0)} ms; received by the sidecar after ${(receivedAt - moveWritten).toFixed(0)} ms; reloads ${moveReloads}, ` +
        `runtime changes ${afterMove.runtime - beforeMove.runtime}; CPU: ${cpuText(moveCpu)}`;
      ctx.log(
        `${NAME}: move into the ${move.kind} policy of ${scaleSourceName(move.index)} seen after ${moveMs.toFixed(0)} ms (${detail})` +
          (moved.unexpected > 0 ? `; unexpected replies: ${moved.unexpectedReplies.join('; ')}` : ''),
      );
      moveResults.push({
        result: move.result,
        description: `then the probe's source alone moved into the ${move.kind} policy of ${scaleSourceName(move.index)} (the whole ${count + 1}-source entry written) -> its first request that policy denies refused; ${detail}`,
        ms: moveMs,
        reloads: moveReloads,
        unexpected: moved.unexpected,
      });
    }
    const probed = await background.stop();
    background = undefined;
    ctx.log(`${NAME}: / probe ${probed.failed} failed of ${probed.requests}`);
    const requests = probed.requests + check.requests;
    const failed = probed.failed + converged.unexpected + moveResults.reduce((n, m) => n + m.unexpected, 0);
    return [
      {
        ...summarize(
          CONVERGED,
          `service-intentions write (1 -> ${count + 1} sources; the probe's source moved from an L7 policy to an L4 allow) -> its first request the old policy denied served`,
          [convergedMs],
          requests,
          failed,
        ),
        reloads: bigReloads,
      },
      {
        ...summarize(APPLIED, `the same write -> the destination sidecar reloaded with the new rules; ${scale}; before: ${memoryText(memoryBefore)}`, [appliedMs], requests, failed),
        reloads: bigReloads,
      },
      ...moveResults.map((m) => ({ ...summarize(m.result, m.description, [m.ms], requests, failed), reloads: m.reloads })),
    ];
  } finally {
    await background?.stop();
    check.close();
    await pair.close();
  }
}

export const intentionScale: ControlPlaneCase = { name: NAME, produces: [CONVERGED, APPLIED, MOVE_RENDERED, MOVE_AGENT], repeats: () => 1, profiles: ['full'], run };
