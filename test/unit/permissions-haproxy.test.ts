/**
 * L7 permissions on the real HAProxy (HAPROXY_BIN) with the real SPOE agent: generated policies,
 * rendered exactly as the sidecar renders them (render-permissions.ts chains for the policies
 * renderedPolicies picks, the agent's per-request `permissions` message for the others), and raw
 * HTTP/1.1 requests aimed at their edges. HAProxy's answer (200, or 403 `RBAC: access denied`)
 * must equal decideL7, the evaluator of Envoy's RBAC semantics that the L7 differential test checks
 * against Consul's own RBAC generation. The connection's verdict ("L7 policy P") is set by a rule
 * from the request's `x-policy` header, standing in for the per-connection agent decision.
 * Seeds: PERMISSIONS_SEED (a number, or `random`), else a fixed one; printed on failure.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { freePorts } from '../../devtools/ports.js';
import { SPOE_AGENT_BACKEND_NAME, SPOE_AGENT_SOCKET_FILE, SPOE_ENGINE } from '../../src/domain/haproxy-names.js';
import { type IntentionPermission, type IntentionSet, type PermissionMatch, policiesOf } from '../../src/domain/intentions.js';
import { RBAC_DENIED_BODY, permissionLines, unrenderable } from '../../src/haproxy/render-permissions.js';
import { Authorizer } from '../../src/intentions/authorizer.js';
import { decideL7 } from '../../src/intentions/evaluate.js';
import { SpoeAgent } from '../../src/spoe/agent.js';
import { intentionsEnforcement, renderedPolicies } from '../../src/translate/spoe.js';
import { serveChecked, stopAll } from '../helpers/haproxy-once.js';
import { intentionFrom } from '../helpers/intentions.js';
import { headerArb, METHODS, nearReq, pathArb, type Req, rawRequest, reqArb, send } from '../helpers/matcher-arbs.js';

const SEED_ENV = process.env['PERMISSIONS_SEED'];
const SEED = SEED_ENV === 'random' ? Math.floor(Math.random() * 2 ** 31) : Number(SEED_ENV ?? 20_261_205);

const dir = mkdtempSync(join(tmpdir(), 'hc-permissions-'));
after(() => {
  stopAll();
  rmSync(dir, { recursive: true, force: true });
});

interface Stats {
  requests: number;
  allowed: number;
  viaAgent: number;
  renderedPolicies: number;
  agentPolicies: number;
}

/** One HAProxy, one agent, every request asked; the mismatches. */
async function differential(set: IntentionSet, reqs: readonly Req[], stats: Stats): Promise<string[]> {
  const [port = 0] = await freePorts(1);
  const runDir = mkdtempSync(join(dir, 'run-'));
  const policies = [...policiesOf(set).values()];
  const rendered = renderedPolicies(set);
  const renderedIds = new Set(rendered.map((p) => p.id));
  stats.renderedPolicies += rendered.length;
  stats.agentPolicies += policies.length - rendered.length;
  const enforcement = intentionsEnforcement(runDir, '1', { policies: rendered });
  for (const file of enforcement.files) writeFileSync(join(runDir, file.name), file.content);
  const cfg = join(runDir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '    nbthread 2',
      'defaults',
      '    timeout connect 1s',
      '    timeout client 5s',
      '    timeout server 5s',
      'frontend l7',
      '    mode http',
      `    bind 127.0.0.1:${port}`,
      `    filter spoe engine ${SPOE_ENGINE} config ${join(runDir, enforcement.spoe.configFile)}`,
      // The per-connection verdict the agent would give for a source governed by policy x-policy.
      '    http-request set-var(sess.connect.auth) int(2)',
      '    http-request set-var(sess.connect.policy) req.hdr(x-policy)',
      ...permissionLines(rendered, SPOE_ENGINE, '{ always_true }').map((l) => `    ${l}`),
      '    http-request return status 200 content-type text/plain string allowed',
      `backend ${SPOE_AGENT_BACKEND_NAME}`,
      '    mode tcp',
      '    timeout server 1m',
      `    server agent unix@${join(runDir, SPOE_AGENT_SOCKET_FILE)}`,
      '',
    ].join('\n'),
  );
  const authorizer = new Authorizer();
  authorizer.update({ intentions: set, trustDomain: 'test.consul' });
  const agent = await SpoeAgent.listen({ socketPath: join(runDir, SPOE_AGENT_SOCKET_FILE), handle: authorizer.handle });
  let haproxy: { stop(): void } | undefined;
  try {
    haproxy = await serveChecked(cfg, port);
    const mismatches: string[] = [];
    const ask = async (req: Req, policyIndex: number) => {
      const policy = policies[policyIndex % policies.length];
      if (policy === undefined) return;
      const headers: Req['headers'] = [...req.headers, ['x-policy', policy.id]];
      const raw = rawRequest({ ...req, headers });
      const lines = [['host', 't'], ...headers.map(([n, v]) => [n.toLowerCase(), v.replace(/^[ \t]+|[ \t]+$/g, '')] as const), ['connection', 'close']] as const;
      const expected = decideL7(policy, { method: req.method, path: req.target.split('?')[0] ?? '', headers: lines });
      const response = await send(port, raw);
      const got = response.startsWith('HTTP/1.1 200')
        ? true
        : response.startsWith('HTTP/1.1 403') && (req.method === 'HEAD' || response.endsWith(RBAC_DENIED_BODY))
          ? false
          : response.split('\r\n')[0];
      stats.requests += 1;
      stats.allowed += expected ? 1 : 0;
      stats.viaAgent += renderedIds.has(policy.id) ? 0 : 1;
      if (got !== expected) {
        const how = renderedIds.has(policy.id) ? 'rendered' : `agent (${unrenderable(policy) ?? 'over the ACL budget'})`;
        mismatches.push(`${JSON.stringify(raw)}: HAProxy ${String(got)}, expected ${expected} — policy ${how} ${JSON.stringify(policy)}`);
      }
    };
    for (let i = 0; i < reqs.length; i += 16) await Promise.all(reqs.slice(i, i + 16).map((req, j) => ask(req, i + j)));
    return mismatches;
  } finally {
    haproxy?.stop();
    await agent.close();
  }
}

const permissionMatchArb: fc.Arbitrary<PermissionMatch> = fc
  .tuple(fc.option(pathArb), fc.subarray(METHODS.slice(0, 4), { maxLength: 2 }), fc.array(headerArb, { maxLength: 2 }))
  .map(([path, methods, headers]) => (path === null ? { methods, headers } : { path, methods, headers }));
const permissionArb: fc.Arbitrary<IntentionPermission> = fc.record({ action: fc.constantFrom('allow' as const, 'deny' as const), http: permissionMatchArb });
const setArb: fc.Arbitrary<readonly [IntentionSet, Req[]]> = fc
  .tuple(fc.array(fc.array(permissionArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 8 }), fc.boolean())
  .chain(([policies, defaultAllow]) => {
    const set: IntentionSet = { intentions: policies.map((permissions, i) => intentionFrom(`s${i}`, { permissions })), defaultAllow };
    const aimed = policies.flatMap((permissions) => permissions.flatMap((p) => (p.http === undefined ? [] : [nearReq({ ...p.http, queryParams: [] })])));
    return fc.tuple(fc.constant(set), fc.array(fc.oneof(reqArb, ...aimed), { minLength: 96, maxLength: 96 }));
  });

describe('L7 permissions on HAProxy with the SPOE agent', () => {
  test('fixed edges: a header sent twice, an absent inverted header, a comma pattern through the agent, lower-case methods, a query that is not the path', async () => {
    const exact1: IntentionPermission = { action: 'allow', http: { headers: [{ name: 'x-a', match: { kind: 'exact', value: '1' }, invert: false }], methods: [] } };
    const notExact1: IntentionPermission = { action: 'allow', http: { headers: [{ name: 'x-a', match: { kind: 'exact', value: '1' }, invert: true }], methods: [] } };
    const comma: IntentionPermission = { action: 'allow', http: { headers: [{ name: 'x-a', match: { kind: 'exact', value: 'a,b' }, invert: false }], methods: [] } };
    const admin: IntentionPermission[] = [
      { action: 'deny', http: { path: { kind: 'prefix', value: '/admin' }, headers: [], methods: [] } },
      { action: 'allow', http: { path: { kind: 'prefix', value: '/' }, headers: [], methods: ['GET', 'PUT'] } },
    ];
    const set: IntentionSet = {
      intentions: [
        intentionFrom('a', { permissions: [exact1] }),
        intentionFrom('b', { permissions: [notExact1] }),
        intentionFrom('c', { permissions: [comma] }),
        intentionFrom('d', { permissions: admin }),
      ],
      defaultAllow: false,
    };
    const policies = [...policiesOf(set).values()];
    assert.equal(renderedPolicies(set).length, 3, 'the comma pattern goes to the agent');
    const req = (method: string, target: string, ...lines: string[]): Req => ({ method, target, headers: lines.map((l) => [l.split(':')[0] ?? '', l.slice(l.indexOf(':') + 1)]) });
    // Requests in policy order (request i asks policy i mod 4).
    const reqs = [
      req('GET', '/', 'x-a:1'),
      req('GET', '/', 'x-a:1', 'x-a:1'),
      req('GET', '/', 'x-a:a', 'x-a:b'),
      req('GET', '/admin/x'),
      req('GET', '/', 'x-a:1', 'x-a:1'),
      req('GET', '/'),
      req('GET', '/', 'x-a:a,b'),
      req('get', '/x'),
      req('GET', '/?x-a=1'),
      req('GET', '/', 'x-a:1'),
      req('GET', '/', 'x-a:a'),
      req('PUT', '/adm?/admin'),
      req('GET', '/', 'x-a:2'),
      req('GET', '/', 'x-a:2'),
      req('GET', '/', 'x-a:b', 'x-a:a'),
      req('HEAD', '/x'),
    ];
    const stats: Stats = { requests: 0, allowed: 0, viaAgent: 0, renderedPolicies: 0, agentPolicies: 0 };
    assert.deepEqual(await differential(set, reqs, stats), []);
    assert.equal(policies.length, 4);
    assert.equal(stats.viaAgent, 4);
    assert.ok(stats.allowed > 4 && stats.allowed < 12, `allowed ${stats.allowed} of 16`);
  });

  test('fast-check: HAProxy and the agent decide as Envoy would', async (t) => {
    const stats: Stats = { requests: 0, allowed: 0, viaAgent: 0, renderedPolicies: 0, agentPolicies: 0 };
    let failed: string[] = [];
    const property = fc.asyncProperty(setArb, async ([set, reqs]) => {
      failed = await differential(set, reqs, stats);
      return failed.length === 0;
    });
    const details = await fc.check(property, { seed: SEED, numRuns: 12, endOnFailure: true });
    if (details.failed) {
      const cause = failed.length > 0 ? failed.slice(0, 10).join('\n') : String(details.errorInstance);
      throw new Error(`seed ${SEED} (PERMISSIONS_SEED=${SEED} reproduces it):\n${cause}`);
    }
    t.diagnostic(
      `seed ${SEED}: ${stats.requests} requests, ${stats.allowed} allowed, ${stats.viaAgent} decided by the agent; ${stats.renderedPolicies} policies rendered, ${stats.agentPolicies} through the agent`,
    );
    // Both paths and both outcomes were exercised.
    assert.ok(stats.viaAgent > 50 && stats.viaAgent < stats.requests - 50, JSON.stringify(stats));
    assert.ok(stats.allowed > 100 && stats.allowed < stats.requests - 100, JSON.stringify(stats));
  });
});
