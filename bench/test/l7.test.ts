/**
 * The L7 paths' and cases' policies, checked against haproxy-connect's own compiler and Envoy-semantics
 * evaluator (what the benchmark claims each path and case measures), the haproxy.cfg reader, the
 * bisection of the scale case and the L7 line of the report.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parsePermissions } from '../../src/consul/permissions.js';
import { l7Policy, type L7Policy, type PermissionRequest } from '../../src/domain/intentions.js';
import { permissionMatches, decideL7 } from '../../src/intentions/evaluate.js';
import { permissionLines, policyAclCount, unrenderable } from '../../src/haproxy/render-permissions.js';
import { largestAccepted } from '../control-plane/intention-scale.js';
import { FLIP_ALLOWED, FLIP_DENIED, FLIP_PATH } from '../control-plane/l7-permission-change.js';
import { AGENT_L7_PERMISSIONS, bindsPort, type ConsulPermission, DENIED_PATH, RENDERED_L7_PERMISSIONS, renderedL7, renderedPathPrefixes, scaleSourcePermissions } from '../lib/l7-path.js';
import { l7CostTable, type PathSummary } from '../report.js';

function policyOf(permissions: readonly ConsulPermission[]): L7Policy {
  const parsed = parsePermissions(permissions);
  assert.equal(parsed.problem, undefined);
  // The dev agent runs without ACLs: default allow.
  return l7Policy(parsed.permissions, true);
}

/** The benchmark's request: wrk's and fortio's `GET /` (no query, none of the policies' headers). */
const BENCH_REQUEST: PermissionRequest = { method: 'GET', path: '/', headers: [['host', '127.0.0.1']] };
const get = (path: string): PermissionRequest => ({ ...BENCH_REQUEST, path });

describe('the L7 paths', () => {
  const rendered = policyOf(RENDERED_L7_PERMISSIONS);
  const agent = policyOf(AGENT_L7_PERMISSIONS);
  test('five permissions rendered exactly; the agent variant is the same plus one the compiler leaves to the agent', () => {
    assert.equal(rendered.permissions.length, 5);
    assert.equal(unrenderable(rendered), undefined);
    assert.equal(agent.permissions.length, 6);
    assert.match(unrenderable(agent) ?? '', /^permission 2: /);
  });
  test("the benchmark's request walks every permission and is allowed by the last one", () => {
    for (const policy of [rendered, agent]) {
      assert.equal(decideL7(policy, BENCH_REQUEST), true);
      const first = policy.permissions.findIndex((p) => permissionMatches(p.http, BENCH_REQUEST));
      assert.equal(first, policy.permissions.length - 1);
      assert.equal(policy.permissions[first]?.action, 'allow');
    }
  });
  test('the readiness check path is denied by both', () => {
    for (const policy of [rendered, agent]) assert.equal(decideL7(policy, get(DENIED_PATH)), false);
  });
});

describe('the L7 cases', () => {
  test('l7-permission-change: both variants render, allow / and disagree on the flip path', () => {
    const allowed = policyOf(FLIP_ALLOWED);
    const denied = policyOf(FLIP_DENIED);
    assert.notEqual(allowed.id, denied.id);
    for (const p of [allowed, denied]) {
      assert.equal(unrenderable(p), undefined);
      assert.equal(decideL7(p, BENCH_REQUEST), true);
    }
    assert.equal(decideL7(allowed, get(FLIP_PATH)), true);
    assert.equal(decideL7(denied, get(FLIP_PATH)), false);
  });
  test('intention-scale: one ACL per source, a distinct policy each', () => {
    const ids = new Set<string>();
    for (const i of [0, 1, 42, 9999]) {
      const p = policyOf(scaleSourcePermissions(i));
      assert.equal(unrenderable(p), undefined);
      assert.equal(policyAclCount(p), 1);
      ids.add(p.id);
    }
    assert.equal(ids.size, 4);
  });
});

describe('renderedL7', () => {
  test("reads the compiler's own lines: policies, ACLs, chain rules, agent rules", () => {
    const a = policyOf(RENDERED_L7_PERMISSIONS);
    const b = policyOf(scaleSourcePermissions(7));
    const cfg = ['frontend public_listener', '    bind 127.0.0.1:21000 ssl crt-list /x', ...permissionLines([a, b], 'connect', '{ always_true }').map((l) => `    ${l}`)].join('\n');
    const r = renderedL7(cfg);
    assert.deepEqual(r.policies, [a.id, b.id]);
    assert.equal(r.acls, policyAclCount(a) + policyAclCount(b));
    assert.equal(r.agentRules, 1);
    assert.ok(r.chainRules >= a.permissions.length + b.permissions.length + 2);
    // PathPrefix `/` takes every request: no ACL.
    assert.deepEqual(renderedPathPrefixes(cfg), ['/admin', '/api/', '/s00007/']);
    assert.equal(bindsPort(cfg, 21000), true);
    assert.equal(bindsPort(cfg, 2100), false);
  });
});

describe('largestAccepted', () => {
  test('bisects to within the resolution below the first refused count', async () => {
    const limit = 7_321;
    let attempts = 0;
    const found = await largestAccepted(0, 10_000, 0.01, async (n) => {
      attempts++;
      return n <= limit;
    });
    assert.ok(found <= limit && limit - found <= 100, String(found));
    assert.ok(attempts <= 10);
  });
});

describe('l7CostTable', () => {
  const path = (name: string, cpu: number[], daemon: number[]): PathSummary => ({
    path: name,
    description: '',
    keepAliveRps: [10_000],
    connectionCloseRps: [],
    p50Us: [300],
    p99Us: [1_000],
    p999Us: [2_000],
    newConnectionP50Us: [],
    newConnectionP99Us: [],
    cpuUsPerRequest: name === 'direct' ? { app: [5] } : { 'source sidecar': cpu, 'destination sidecar': cpu, ...(daemon.length > 0 && { 'destination daemon': daemon }) },
    tail: [],
    rssKiB: {},
    errors: 0,
    requests: 1,
  });
  test('the L7 paths over hc-http, with the destination daemon, the reference and direct as the floor', () => {
    const table = l7CostTable([
      path('direct', [], []),
      path('reference-http', [50, 52], []),
      path('hc-http', [60], [1]),
      path('hc-http-l7', [65], [1]),
      path('hc-http-l7-agent', [80, 78, 90], [12, 11, 13]),
    ]);
    assert.deepEqual(table?.slice(4), [
      '| direct | – | – | – | – | 300 | 1,000 | 10,000 |',
      '| reference-http | 102.0 [100.0–104.0] | -18.0 | – | – | 300 | 1,000 | 10,000 |',
      '| hc-http | 120.0 | – | 1.0 | – | 300 | 1,000 | 10,000 |',
      '| hc-http-l7 | 130.0 | +10.0 | 1.0 | +0.0 | 300 | 1,000 | 10,000 |',
      '| hc-http-l7-agent | 160.0 [156.0–180.0] | +40.0 | 12.0 [11.0–13.0] | +11.0 | 300 | 1,000 | 10,000 |',
    ]);
  });
  test('absent without the L7 paths or without a fixed-rate run', () => {
    assert.equal(l7CostTable([path('direct', [], []), path('hc-http', [60], [1])]), undefined);
    assert.equal(l7CostTable([{ ...path('hc-http', [60], [1]), p99Us: [] }, path('hc-http-l7', [65], [1])]), undefined);
  });
});
