/**
 * Control-plane case "L7 permission change": the source's L7 intention on its destination is
 * rewritten again and again, alternating between two policies HAProxy renders as ACL chains, while
 * a keep-alive probe of `/` runs through the pair (`pc-src` → `pc-dst`, protocol http). Both
 * policies allow `/` (so 0 failed requests is the goal); they differ on FLIP_PATH, which one allows
 * and the other denies, and which a second keep-alive probe asks to see the change.
 *
 * Each change brings a policy the running configuration does not render: the agent decides it per
 * request at once (an intentions change is a runtime epoch update), and the sidecar reloads HAProxy
 * with the new chain after its quiet period (src/reconcile/reload-quiet.ts). Figures per change:
 * - l7-permission-changed: from the config-entry PUT returning to the first FLIP_PATH request with
 *   the new verdict (then CHECK_REQUESTS more must agree);
 * - l7-permission-reloaded: from the PUT to the destination sidecar's reload counted in its metrics
 *   (polled every 10 ms; then CHECK_REQUESTS more must still agree, now on the new rules).
 * Failed requests: the `/` probe's failures plus every FLIP_PATH verdict that disagreed after
 * convergence. Reloads: the destination's `haproxy_connect_config_applies_total{method="reload"}`
 * over the changes, expected exactly 1 per change (the description gives the count per change and
 * how many `haproxy_connect_haproxy_reloads_total` counted under the `intentions` reason).
 */
import type { ConsulPermission } from '../lib/l7-path.js';
import { serviceIntentions } from '../lib/l7-path.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { backgroundProbe, destinationApplies, destinationConfig, disagreeing, SETTLE_MS, sleep, untilReloaded, untilVerdict, writeIntentions } from './l7-common.js';
import { startMeshPair } from './mesh-pair.js';
import { Probe } from './probe.js';

const NAME = 'l7-permission-change';
const CHANGED = 'l7-permission-changed';
const CHANGED_DESCRIPTION = "service-intentions write (the source's L7 permissions: one renderable policy <-> another) -> first request with the new verdict";
const RELOADED = 'l7-permission-reloaded';
const RELOADED_DESCRIPTION = 'the same write -> the destination sidecar reloaded with the new ACL chain';
/** The path one variant allows and the other denies. */
export const FLIP_PATH = '/flip/x';
const CONVERGENCE_TIMEOUT_MS = 30_000;
const RELOAD_TIMEOUT_MS = 10_000;
/** Requests after each convergence (and again after the reload) that must agree with the new policy. */
const CHECK_REQUESTS = 20;

const DENY_ADMIN: ConsulPermission = { Action: 'deny', HTTP: { PathPrefix: '/admin' } };
const ALLOW_GET: ConsulPermission = { Action: 'allow', HTTP: { PathPrefix: '/', Methods: ['GET', 'HEAD'] } };
/** FLIP_PATH allowed (by the catch-all GET). */
export const FLIP_ALLOWED: readonly ConsulPermission[] = [DENY_ADMIN, ALLOW_GET];
/** FLIP_PATH denied, `/` still allowed. */
export const FLIP_DENIED: readonly ConsulPermission[] = [DENY_ADMIN, { Action: 'deny', HTTP: { PathPrefix: '/flip/' } }, ALLOW_GET];

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const pair = await startMeshPair(ctx, 'pc', { httpDefaults: true, destinationMetrics: true });
  const check = new Probe(pair.upstreamPort);
  const entry = (permissions: readonly ConsulPermission[]) => serviceIntentions(pair.destination, [{ Name: pair.source, Permissions: [...permissions] }]);
  let background: ReturnType<typeof backgroundProbe> | undefined;
  try {
    // Set-up (not measured): the first policy, in force and rendered.
    await writeIntentions(ctx, entry(FLIP_ALLOWED));
    await untilVerdict(check, '/admin/x', 'deny', CONVERGENCE_TIMEOUT_MS);
    await sleep(SETTLE_MS);
    const rendered = destinationConfig(ctx, pair).rendered;
    if (rendered.policies.length !== 1) throw new Error(`${NAME}: the destination renders ${rendered.policies.length} L7 policies after the set-up, expected 1`);
    const start = await destinationApplies(pair);
    const checkBaseline = check.requests;
    background = backgroundProbe(pair.probe);
    const changedMs: number[] = [];
    const reloadedMs: number[] = [];
    const reloadsPerChange: number[] = [];
    let wrong = 0;
    let previous = start;
    for (let i = 0; i < ctx.repeats; i++) {
      const [permissions, want] = i % 2 === 0 ? ([FLIP_DENIED, 'deny'] as const) : ([FLIP_ALLOWED, 'allow'] as const);
      const before = await destinationApplies(pair);
      if (i > 0) reloadsPerChange.push(before.reloads - previous.reloads);
      previous = before;
      await writeIntentions(ctx, entry(permissions));
      const written = performance.now();
      const converged = await untilVerdict(check, FLIP_PATH, want, CONVERGENCE_TIMEOUT_MS);
      changedMs.push(converged.at - written);
      const afterConvergence = await disagreeing(check, FLIP_PATH, want, CHECK_REQUESTS);
      const { reloadedAt } = await untilReloaded(pair, before, RELOAD_TIMEOUT_MS, `change ${i + 1}`);
      reloadedMs.push(reloadedAt - written);
      const afterReload = await disagreeing(check, FLIP_PATH, want, CHECK_REQUESTS);
      const bad = [...converged.unexpectedReplies, ...afterConvergence, ...afterReload];
      wrong += bad.length;
      ctx.log(
        `${NAME}: ${i + 1}/${ctx.repeats} -> ${FLIP_PATH} ${want}: new verdict after ${changedMs.at(-1)?.toFixed(1)} ms, reloaded after ${reloadedMs.at(-1)?.toFixed(1)} ms; ` +
          `${converged.unexpected} unexpected while converging, ${afterConvergence.length} disagreeing after it, ${afterReload.length} after the reload${bad.length > 0 ? ` (${bad.join('; ')})` : ''}`,
      );
    }
    await sleep(SETTLE_MS);
    const end = await destinationApplies(pair);
    reloadsPerChange.push(end.reloads - previous.reloads);
    const probed = await background.stop();
    background = undefined;
    const reloads = end.reloads - start.reloads;
    const meanReloadMs = reloads > 0 ? ((end.reloadSeconds - start.reloadSeconds) * 1000) / reloads : Number.NaN;
    const counts = `destination reloads: ${reloads} in ${ctx.repeats} changes (per change: ${reloadsPerChange.join(', ')}; reason intentions: ${end.intentionReloads - start.intentionReloads}; runtime changes: ${end.runtime - start.runtime}; mean reload apply ${meanReloadMs.toFixed(0)} ms)`;
    ctx.log(`${NAME}: ${counts}; / probe ${probed.failed} failed of ${probed.requests}; ${wrong} ${FLIP_PATH} verdicts disagreeing`);
    const requests = probed.requests + check.requests - checkBaseline;
    const failed = probed.failed + wrong;
    return [
      { ...summarize(CHANGED, `${CHANGED_DESCRIPTION}; ${counts}`, changedMs, requests, failed), reloads },
      { ...summarize(RELOADED, RELOADED_DESCRIPTION, reloadedMs, requests, failed), reloads },
    ];
  } finally {
    await background?.stop();
    check.close();
    await pair.close();
  }
}

/**
 * Every change is a reload (about 0.7 s with its quiet period): 10 in the full profile, where the
 * runtime cases take 30 (the full run's 10-minute budget, bench/profile.ts); 2 in quick.
 */
const FULL_REPEATS = 10;
const QUICK_REPEATS = 2;

export const l7PermissionChange: ControlPlaneCase = {
  name: NAME,
  produces: [CHANGED, RELOADED],
  repeats: (profile) => (profile.name === 'quick' ? QUICK_REPEATS : FULL_REPEATS),
  run,
};
