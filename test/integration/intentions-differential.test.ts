/**
 * Differential test of intention evaluation against real Consul (v1.16.2 dev agents): seeded
 * random `service-intentions` (exact and wildcard sources and destinations, allow/deny, L7 ones
 * with Permissions on HTTP destinations) → for every destination × source, `evaluate` on our
 * client's match-endpoint answer must equal Consul's own verdicts: GET /v1/connect/intentions/check
 * (server side, consistent) and POST /v1/agent/connect/authorize (agent side, through its cache,
 * so it is polled until it settles). Once with default allow (no ACLs), once with ACLs on and
 * default_policy deny.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { evaluate } from '../../src/intentions/evaluate.js';
import type { IntentionSet } from '../../src/domain/intentions.js';
import { ConsulDevAgent } from '../../devtools/consul-dev-agent.js';
import { prng } from '../helpers/prng.js';

const SEED = Number(process.env.INTENTIONS_SEED ?? 20_261_124);
const ROUNDS = 3;
const DESTINATIONS = ['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9'];
/** These get service-defaults protocol http, so L7 intentions may target them. */
const HTTP_DESTINATIONS = new Set(['d0', 'd1', 'd2', 'd3']);
const SOURCES = ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 'unknown'];
const SOURCE_POOL = ['s0', 's1', 's2', 's3', 's4', 's5', 's6', '*'];
const AUTHORIZE_SETTLE_MS = 5_000;
const ROOT_TOKEN = '11111111-2222-3333-4444-555555555555';

interface SourceSpec {
  Name: string;
  Action?: 'allow' | 'deny';
  Permissions?: Array<Record<string, unknown>>;
}

function randomSources(rand: () => number, l7: boolean): SourceSpec[] {
  const out: SourceSpec[] = [];
  for (const name of SOURCE_POOL) {
    if (rand() < 0.45) continue;
    if (l7 && rand() < 0.25) {
      out.push({ Name: name, Permissions: [{ Action: rand() < 0.5 ? 'allow' : 'deny', HTTP: { PathPrefix: `/p${Math.floor(rand() * 9)}` } }] });
    } else {
      out.push({ Name: name, Action: rand() < 0.5 ? 'allow' : 'deny' });
    }
  }
  return out;
}

interface Outcome {
  combinations: number;
  /** Authorize answers that disagreed before the agent's cache caught up, and the longest wait. */
  staleAuthorizeAnswers: number;
  maxSettleMs: number;
  l7Matches: number;
  defaultDecisions: number;
  allowed: number;
}

async function runDifferential(agent: ConsulDevAgent, client: ConsulHttpClient, expectDefaultAllow: boolean, seed: number): Promise<Outcome> {
  const rand = prng(seed);
  const signal = new AbortController().signal;
  const outcome: Outcome = { combinations: 0, staleAuthorizeAnswers: 0, maxSettleMs: 0, l7Matches: 0, defaultDecisions: 0, allowed: 0 };
  const roots = await agent.get<{ TrustDomain: string }>('/v1/agent/connect/ca/roots');
  for (const name of HTTP_DESTINATIONS) await agent.put('/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });

  for (let round = 0; round < ROUNDS; round++) {
    // The wildcard destination (L4 only: L7 on '*' would need proxy-defaults http) and each destination.
    for (const dest of ['*', ...DESTINATIONS]) {
      const sources = randomSources(rand, HTTP_DESTINATIONS.has(dest)).filter((x) => dest !== '*' || x.Name !== '*');
      if (sources.length === 0) {
        const res = await agent.fetch(`/v1/config/service-intentions/${encodeURIComponent(dest)}`, { method: 'DELETE' });
        assert.ok(res.ok, `DELETE ${dest}: ${res.status}`);
      } else {
        await agent.put('/v1/config', { Kind: 'service-intentions', Name: dest, Sources: sources });
      }
    }

    for (const dest of DESTINATIONS) {
      const { value: set } = await client.intentionsMatch({ name: dest, namespace: '' }, {}, signal);
      assert.equal(set.defaultAllow, expectDefaultAllow);
      for (const src of SOURCES) {
        const ours = evaluate({ service: src, namespace: 'default', partition: 'default' }, set.intentions, set.defaultAllow);
        const check = await agent.get<{ Allowed: boolean }>(`/v1/connect/intentions/check?source=${src}&destination=${dest}`);
        const context = `round ${round}, ${src} -> ${dest} (seed ${seed}): ours ${ours.allowed} (${ours.reason}); intentions ${JSON.stringify(set.intentions.map((i) => [i.sourceName, i.action || 'L7', i.precedence]))}`;
        assert.equal(ours.allowed, check.Allowed, `intentions/check disagrees: ${context}`);
        const settle = await authorizeSettles(agent, roots.TrustDomain, src, dest, ours.allowed, context);
        outcome.staleAuthorizeAnswers += settle.stale;
        outcome.maxSettleMs = Math.max(outcome.maxSettleMs, settle.ms);
        outcome.combinations += 1;
        if (ours.allowed) outcome.allowed += 1;
        if (ours.intention === undefined) outcome.defaultDecisions += 1;
        else if (ours.intention.permissions.length > 0) outcome.l7Matches += 1;
      }
    }
  }
  return outcome;
}

/** The agent's authorize endpoint reads its intention cache: poll until it matches, with a deadline. */
async function authorizeSettles(agent: ConsulDevAgent, trustDomain: string, src: string, dest: string, expected: boolean, context: string): Promise<{ stale: number; ms: number }> {
  const started = Date.now();
  const deadline = started + AUTHORIZE_SETTLE_MS;
  let last: { Authorized: boolean; Reason: string } | undefined;
  for (let stale = 0; ; stale++) {
    const res = await agent.fetch('/v1/agent/connect/authorize', {
      method: 'POST',
      body: JSON.stringify({ Target: dest, ClientCertURI: `spiffe://${trustDomain}/ns/default/dc/dc1/svc/${src}` }),
    });
    assert.ok(res.ok, `authorize ${src} -> ${dest}: HTTP ${res.status}`);
    last = (await res.json()) as { Authorized: boolean; Reason: string };
    if (last.Authorized === expected) return { stale, ms: Date.now() - started };
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`agent/connect/authorize disagrees (${last?.Reason}): ${context}`);
}

function summary(o: Outcome): string {
  return (
    `${o.combinations} combinations: ${o.allowed} allowed, ${o.defaultDecisions} by the default policy, ` +
    `${o.l7Matches} by an L7 intention; authorize: ${o.staleAuthorizeAnswers} stale answers, settled within ${o.maxSettleMs} ms`
  );
}

describe('intentions: evaluate agrees with Consul 1.16', () => {
  let open: ConsulDevAgent | undefined;
  let acl: ConsulDevAgent | undefined;
  const clients: ConsulHttpClient[] = [];

  before(async () => {
    [open, acl] = await Promise.all([
      ConsulDevAgent.start(),
      ConsulDevAgent.start({
        token: ROOT_TOKEN,
        extraConfig: `acl { enabled = true, default_policy = "deny", tokens { initial_management = "${ROOT_TOKEN}", agent = "${ROOT_TOKEN}" } }`,
      }),
    ]);
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([open?.stop(), acl?.stop()]);
  });

  test('default allow (ACLs off)', async (t) => {
    assert.ok(open !== undefined);
    const client = new ConsulHttpClient({ address: open.httpAddr });
    clients.push(client);
    const outcome = await runDifferential(open, client, true, SEED);
    t.diagnostic(summary(outcome));
    assert.ok(outcome.combinations >= 200 && outcome.l7Matches > 0 && outcome.defaultDecisions > 0);
  });

  test('default deny (ACLs on, default_policy deny)', async (t) => {
    assert.ok(acl !== undefined);
    const client = new ConsulHttpClient({ address: acl.httpAddr, token: ROOT_TOKEN });
    clients.push(client);
    const outcome = await runDifferential(acl, client, false, SEED + 1);
    t.diagnostic(summary(outcome));
    assert.ok(outcome.combinations >= 200 && outcome.l7Matches > 0 && outcome.defaultDecisions > 0);
  });

  test('a blocking intentionsMatch returns when the intentions change', async () => {
    assert.ok(open !== undefined);
    const client = new ConsulHttpClient({ address: open.httpAddr });
    clients.push(client);
    const signal = new AbortController().signal;
    const first = await client.intentionsMatch({ name: 'blocky', namespace: '' }, {}, signal);
    const started = Date.now();
    const next = client.intentionsMatch({ name: 'blocky', namespace: '' }, first.cursor, signal);
    await new Promise((r) => setTimeout(r, 200));
    await open.put('/v1/config', { Kind: 'service-intentions', Name: 'blocky', Sources: [{ Name: 'web', Action: 'allow' }] });
    const changed: IntentionSet = (await next).value;
    assert.ok(Date.now() - started >= 200);
    // Intentions on the wildcard destination left by the tests above follow, at lower precedence.
    assert.equal(changed.intentions.length, first.value.intentions.length + 1);
    assert.deepEqual([changed.intentions[0]?.sourceName, changed.intentions[0]?.action, changed.intentions[0]?.precedence], ['web', 'allow', 9]);
  });
});
