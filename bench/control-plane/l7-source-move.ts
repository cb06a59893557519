/**
 * Control-plane case "L7 source move": the source of a pair (`sm-src` → `sm-dst`, protocol http)
 * moves between an L4 allow, an L7 intention whose policy other sources keep using (so it is
 * rendered already and stays so), and an L4 deny: allow -> L7 -> deny -> allow, each move one
 * `service-intentions` write. No move needs new rules, so the goal is 0 reloads: the agent and the
 * intentions epoch map (runtime) carry every move.
 *
 * Two requests tell the three states apart on one keep-alive connection: `/` (allowed unless L4
 * deny) and L7_PATH (denied by the policy). Figures, from the PUT returning to the first pair of
 * requests showing the new state (then CHECK_ROUNDS more pairs must all show it, as intention-flip
 * checks a flip):
 * - l7-source-to-l7: L4 allow -> the L7 policy (L7_PATH refused, `/` still served);
 * - l7-source-to-deny: the L7 policy -> L4 deny (`/` refused);
 * - l7-source-to-allow: L4 deny -> L4 allow (both served).
 * Failed requests: answers disagreeing with a converged state, and any answer that is neither a
 * 200 nor Envoy's 403 (a mixed pair while a move lands, `/` refused then L7_PATH served, is not one). Reloads: the destination's `haproxy_connect_config_applies_total{method="reload"}`.
 */
import { type ConsulPermission, type IntentionSource, serviceIntentions } from '../lib/l7-path.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { destinationApplies, destinationConfig, SETTLE_MS, sleep, untilVerdict, verdictOf, writeIntentions } from './l7-common.js';
import { startMeshPair } from './mesh-pair.js';
import type { Probe } from './probe.js';

const NAME = 'l7-source-move';
/** The path the shared policy denies. */
const L7_PATH = '/l7-denied/x';
/** The shared policy: L7_PATH denied, everything else allowed. */
const SHARED_POLICY: readonly ConsulPermission[] = [
  { Action: 'deny', HTTP: { PathPrefix: '/l7-denied/' } },
  { Action: 'allow', HTTP: { PathPrefix: '/' } },
];
/** Sources that keep the shared policy whatever the probe's source does. */
const OTHER_SOURCES = ['sm-other-1', 'sm-other-2'];
const CONVERGENCE_TIMEOUT_MS = 30_000;
/** Request pairs after each convergence that must show the new state. */
const CHECK_ROUNDS = 10;

type State = 'allow' | 'l7' | 'deny';
const MOVES: ReadonlyArray<{ to: State; result: string; description: string }> = [
  { to: 'l7', result: 'l7-source-to-l7', description: 'service-intentions write (source: L4 allow -> an L7 policy other sources use) -> first request the policy denies refused' },
  { to: 'deny', result: 'l7-source-to-deny', description: 'service-intentions write (source: that L7 policy -> L4 deny) -> first request refused' },
  { to: 'allow', result: 'l7-source-to-allow', description: 'service-intentions write (source: L4 deny -> L4 allow) -> first request served again' },
];

/**
 * The state two answers show (`/`, then L7_PATH); undefined for a combination no state gives (a
 * move landing between the two requests: `/` refused then L7_PATH served, from deny to allow) or
 * an unexpected answer (counted in `unexpected`: neither a 200 nor Envoy's 403).
 */
async function stateOf(probe: Probe): Promise<{ state: State | undefined; at: number; unexpected: number }> {
  const root = verdictOf(await probe.ask('/'));
  const reply = await probe.ask(L7_PATH);
  const l7 = verdictOf(reply);
  const state = root === 'allow' && l7 === 'allow' ? 'allow' : root === 'allow' && l7 === 'deny' ? 'l7' : root === 'deny' && l7 === 'deny' ? 'deny' : undefined;
  return { state, at: reply.at, unexpected: (root === 'unexpected' ? 1 : 0) + (l7 === 'unexpected' ? 1 : 0) };
}

function sourceIn(state: State, name: string): IntentionSource {
  return state === 'l7' ? { Name: name, Permissions: [...SHARED_POLICY] } : { Name: name, Action: state };
}

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const pair = await startMeshPair(ctx, 'sm', { httpDefaults: true, destinationMetrics: true });
  const { probe } = pair;
  const entry = (state: State) => serviceIntentions(pair.destination, [...OTHER_SOURCES.map((Name) => ({ Name, Permissions: [...SHARED_POLICY] })), sourceIn(state, pair.source)]);
  try {
    // Set-up (not measured): the shared policy exists (one reload renders it), the source is allowed.
    await writeIntentions(ctx, entry('l7'));
    await untilVerdict(probe, L7_PATH, 'deny', CONVERGENCE_TIMEOUT_MS);
    await writeIntentions(ctx, entry('allow'));
    await untilVerdict(probe, L7_PATH, 'allow', CONVERGENCE_TIMEOUT_MS);
    await sleep(SETTLE_MS);
    const rendered = destinationConfig(ctx, pair).rendered;
    if (rendered.policies.length !== 1) throw new Error(`${NAME}: the destination renders ${rendered.policies.length} L7 policies after the set-up, expected the shared one`);
    const start = await destinationApplies(pair);
    const baseline = probe.requests;
    const samples = MOVES.map(() => [] as number[]);
    let wrong = 0;
    for (let i = 0; i < ctx.repeats; i++) {
      const line: string[] = [];
      for (const [m, move] of MOVES.entries()) {
        await writeIntentions(ctx, entry(move.to));
        const written = performance.now();
        const deadline = written + CONVERGENCE_TIMEOUT_MS;
        let seen = await stateOf(probe);
        let unexpected = seen.unexpected;
        while (seen.state !== move.to) {
          if (performance.now() > deadline) throw new Error(`${NAME}: timed out after ${CONVERGENCE_TIMEOUT_MS} ms waiting for the move to ${move.to}`);
          seen = await stateOf(probe);
          unexpected += seen.unexpected;
        }
        wrong += unexpected;
        samples[m]?.push(seen.at - written);
        let late = 0;
        for (let k = 0; k < CHECK_ROUNDS; k++) if ((await stateOf(probe)).state !== move.to) late++;
        wrong += late;
        line.push(`${move.to} ${(seen.at - written).toFixed(1)} ms${late > 0 ? ` (${late} late)` : ''}${unexpected > 0 ? ` (${unexpected} unexpected answers)` : ''}`);
      }
      ctx.log(`${NAME}: ${i + 1}/${ctx.repeats} ${line.join(', ')}`);
    }
    await sleep(SETTLE_MS);
    const end = await destinationApplies(pair);
    const reloads = end.reloads - start.reloads;
    const counts = `destination reloads: ${reloads} in ${ctx.repeats * MOVES.length} moves (runtime changes: ${end.runtime - start.runtime})`;
    ctx.log(`${NAME}: ${counts}; ${wrong} answers disagreeing or unexpected`);
    const requests = probe.requests - baseline;
    return MOVES.map((move, m) => ({ ...summarize(move.result, `${move.description}; ${counts}`, samples[m] ?? [], requests, wrong), reloads }));
  } finally {
    await pair.close();
  }
}

export const l7SourceMove: ControlPlaneCase = {
  name: NAME,
  produces: MOVES.map((m) => m.result),
  // Three moves per repetition; quick: 2 repetitions (6 moves).
  repeats: (profile) => (profile.name === 'quick' ? 2 : profile.controlPlaneRepeats),
  run,
};
