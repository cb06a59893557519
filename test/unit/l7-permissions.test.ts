/**
 * L7 intentions, the pure parts: Consul's Permissions JSON → typed permissions (one bad intention
 * never spoils the others), the winning intention's policy, Envoy's matching semantics, the
 * `req.hdrs_bin` codec, the agent's per-connection and per-request answers, and the plan's reason.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parsePermissions } from '../../src/consul/permissions.js';
import { SPOE_AUTH, SPOE_MESSAGE, SPOE_PERMISSIONS_MESSAGE } from '../../src/domain/haproxy-names.js';
import { type Intention, type IntentionSet, type PermissionRequest, l7Policy, policiesOf } from '../../src/domain/intentions.js';
import { Authorizer, RETIRED_POLICY_MS } from '../../src/intentions/authorizer.js';
import { decideL7, decideRequest, evaluate } from '../../src/intentions/evaluate.js';
import { decodeHdrsBin, encodeHdrsBin } from '../../src/spoe/hdrs-bin.js';
import type { SpoeAction, SpoeMessage } from '../../src/spoe/types.js';
import { intentionFrom } from '../helpers/intentions.js';

function l7(source: string, raw: unknown[]): Intention {
  const parsed = parsePermissions(raw);
  return intentionFrom(source, { permissions: parsed.permissions, ...(parsed.problem !== undefined && { unenforceable: parsed.problem }) });
}

const req = (method: string, path: string, ...headers: Array<[string, string]>): PermissionRequest => ({ method, path, headers });

describe('parsePermissions', () => {
  test("Consul's matcher precedence: PathExact over PathPrefix over PathRegex; per header Exact, Regex, Prefix, Suffix, Present", () => {
    const parsed = parsePermissions([
      {
        Action: 'allow',
        HTTP: {
          PathExact: '/a',
          PathPrefix: '/b',
          Header: [{ Name: 'X-A', Exact: '1', Regex: '2', Present: true }, { Name: 'x-b', Suffix: 's', Prefix: 'p' }, { Name: 'x-c' }],
          Methods: ['get', 'PUT'],
        },
      },
      { Action: 'deny' },
    ]);
    assert.equal(parsed.problem, undefined);
    assert.deepEqual(parsed.permissions, [
      {
        action: 'allow',
        http: {
          path: { kind: 'exact', value: '/a' },
          headers: [
            { name: 'x-a', match: { kind: 'exact', value: '1' }, invert: false },
            { name: 'x-b', match: { kind: 'prefix', value: 'p' }, invert: false },
          ],
          methods: ['GET', 'PUT'],
        },
      },
      { action: 'deny' },
    ]);
  });

  const refused: Array<[string, unknown, RegExp]> = [
    ['an RE2-invalid PathRegex', { Action: 'allow', HTTP: { PathRegex: '/la(?=x)y' } }, /permission 2 PathRegex "\/la\(\?=x\)y": RE2 refuses it/],
    ['an RE2-invalid header regex', { Action: 'allow', HTTP: { Header: [{ Name: 'x', Regex: '(a)\\1' }] } }, /header "x" regex/],
    ['a JWT requirement', { Action: 'allow', JWT: { Providers: [{ Name: 'okta' }] } }, /requires a JWT/],
    ['an unknown action', { Action: 'maybe' }, /Action "maybe"/],
    ['an unknown matcher (a later Consul)', { Action: 'allow', HTTP: { Header: [{ Name: 'x', Contains: 'a' }] } }, /not a Consul 1.16 permission/],
    ['a pseudo-header', { Action: 'allow', HTTP: { Header: [{ Name: ':authority', Exact: 'a' }] } }, /":authority" is not an HTTP token/],
    ['a method Envoy would read as regex', { Action: 'allow', HTTP: { Methods: ['GE.'] } }, /method "GE\."/],
    ['a value with a line break', { Action: 'allow', HTTP: { Header: [{ Name: 'x', Exact: 'a\nb' }] } }, /CR, LF or NUL/],
  ];
  for (const [what, permission, message] of refused) {
    test(`${what} makes the intention unenforceable, naming the value`, () => {
      const parsed = parsePermissions([{ Action: 'allow' }, permission]);
      assert.match(parsed.problem ?? '', message);
      assert.deepEqual(parsed.permissions, []);
    });
  }

  test('an unenforceable intention denies the sources it wins for; the others are unaffected', () => {
    const set: IntentionSet = { intentions: [l7('api', [{ Action: 'allow', HTTP: { PathRegex: '(?=x)' } }]), intentionFrom('*', { action: 'allow' })], defaultAllow: true };
    assert.equal(evaluate({ service: 'api', namespace: 'default', partition: 'default' }, set.intentions, true).allowed, false);
    assert.equal(decideRequest({ service: 'api', namespace: 'default', partition: 'default' }, req('GET', '/'), set), false);
    assert.equal(decideRequest({ service: 'web', namespace: 'default', partition: 'default' }, req('GET', '/'), set), true);
    assert.equal(policiesOf(set).size, 0);
  });
});

describe("Envoy's permission semantics", () => {
  const policy = (raw: unknown[], defaultAllow = false) => l7Policy(parsePermissions(raw).permissions, defaultAllow);
  test('first match decides; no match takes the default policy', () => {
    const p = policy([
      { Action: 'deny', HTTP: { PathPrefix: '/admin' } },
      { Action: 'allow', HTTP: { PathPrefix: '/', Methods: ['GET', 'PUT'] } },
    ]);
    assert.equal(decideL7(p, req('GET', '/admin/x')), false);
    assert.equal(decideL7(p, req('PUT', '/x')), true);
    assert.equal(decideL7(p, req('POST', '/x')), false);
    assert.equal(decideL7(p, req('get', '/x')), false, 'methods are case-sensitive');
    assert.equal(decideL7({ ...p, defaultAllow: true }, req('POST', '/x')), true);
  });
  test('headers: joined with a comma, absent only matches an inverted Present', () => {
    const exact = policy([{ Action: 'allow', HTTP: { Header: [{ Name: 'x-a', Exact: '1' }] } }]);
    const inverted = policy([{ Action: 'allow', HTTP: { Header: [{ Name: 'x-a', Exact: '1', Invert: true }] } }]);
    const absent = policy([{ Action: 'allow', HTTP: { Header: [{ Name: 'x-a', Present: true, Invert: true }] } }]);
    assert.equal(decideL7(exact, req('GET', '/', ['x-a', '1'])), true);
    assert.equal(decideL7(exact, req('GET', '/', ['x-a', '1'], ['x-a', '1'])), false);
    assert.equal(decideL7(inverted, req('GET', '/', ['x-a', '1'], ['x-a', '1'])), true);
    assert.equal(decideL7(inverted, req('GET', '/')), false, 'an absent header never matches an inverted Exact');
    assert.equal(decideL7(absent, req('GET', '/')), true);
    assert.equal(decideL7(absent, req('GET', '/', ['x-a', ''])), false);
  });
  test('a regex must match the whole path', () => {
    const p = policy([{ Action: 'allow', HTTP: { PathRegex: '/v[0-9]+' } }]);
    assert.equal(decideL7(p, req('GET', '/v12')), true);
    assert.equal(decideL7(p, req('GET', '/v12/x')), false);
  });
  test('policy ids: equal permissions and default share one; the default is part of it', () => {
    const raw = [{ Action: 'allow', HTTP: { PathPrefix: '/a' } }];
    assert.equal(policy(raw).id, policy(raw).id);
    assert.notEqual(policy(raw).id, policy(raw, true).id);
    assert.match(policy(raw).id, /^p[0-9a-f]{12}$/);
  });
});

describe('req.hdrs_bin', () => {
  test('round trip, names in lower case, long values (multi-byte varints)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.stringMatching(/^[a-z0-9-]{1,300}$/), fc.string({ maxLength: 5000 })), { maxLength: 8 }), (headers) => {
        const valid = headers.map(([n, v]) => [n, v.replace(/[\ud800-\udfff]/g, '?')] as const);
        assert.deepEqual(decodeHdrsBin(encodeHdrsBin(valid)), valid);
      }),
      { seed: 20_261_204, numRuns: 200 },
    );
    assert.deepEqual(decodeHdrsBin(encodeHdrsBin([['X-A', '1']])), [['x-a', '1']]);
  });
  test('malformed blocks are refused, never misread', () => {
    const good = encodeHdrsBin([['x-a', '1']]);
    assert.throws(() => decodeHdrsBin(good.subarray(0, good.length - 1)), /truncated/);
    assert.throws(() => decodeHdrsBin(Buffer.concat([good, Buffer.from([0])])), /after the end marker/);
    assert.throws(() => decodeHdrsBin(Buffer.from([0, 1, 0x41, 0, 0])), /empty name/);
  });
});

describe('the agent on an HTTP listener', () => {
  const set: IntentionSet = {
    intentions: [l7('api', [{ Action: 'allow', HTTP: { PathPrefix: '/ok' } }]), intentionFrom('web', { action: 'allow' }), intentionFrom('batch', { action: 'deny' })],
    defaultAllow: false,
  };
  const intVar = (actions: SpoeAction[], name: string) => {
    const action = actions.find((a) => a.type === 'set-var' && a.name === name);
    return action?.type === 'set-var' && action.value.type === 'int32' ? action.value.value : undefined;
  };
  const permissionsMessage = (policy: string, method: string, path: string, headers: Array<[string, string]> = []): SpoeMessage => ({
    name: SPOE_PERMISSIONS_MESSAGE,
    args: [
      { name: 'policy', value: { type: 'string', value: policy } },
      { name: 'method', value: { type: 'string', value: method } },
      { name: 'path', value: { type: 'string', value: path } },
      { name: 'headers', value: { type: 'binary', value: encodeHdrsBin(headers) } },
    ],
  });

  test('per request: the policy decides; an unknown policy or an unreadable request denies', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set, trustDomain: 'x.consul' });
    const [id] = [...authorizer.policies.keys()];
    assert.ok(id !== undefined);
    assert.equal(intVar(authorizer.handle([permissionsMessage(id, 'GET', '/ok/1')]), 'authz'), 1);
    assert.equal(intVar(authorizer.handle([permissionsMessage(id, 'GET', '/no')]), 'authz'), 0);
    assert.equal(intVar(authorizer.handle([permissionsMessage('p000000000000', 'GET', '/ok')]), 'authz'), 0);
    const broken = permissionsMessage(id, 'GET', '/ok');
    broken.args[3] = { name: 'headers', value: { type: 'binary', value: Buffer.from([5, 1]) } };
    assert.equal(intVar(authorizer.handle([broken]), 'authz'), 0);
    assert.deepEqual([authorizer.stats.requestsAllowed, authorizer.stats.requestsDenied], [1, 3]);
  });

  test('a policy the intentions just dropped still decides for RETIRED_POLICY_MS (sessions given it before the epoch moved); then it is unknown', () => {
    let now = 1_000;
    const authorizer = new Authorizer({ now: () => now });
    authorizer.update({ intentions: set, trustDomain: 'x.consul' });
    const [old] = [...authorizer.policies.keys()];
    assert.ok(old !== undefined);
    // The source's permissions change: a new policy id, the old one no longer in the intentions.
    authorizer.update({ intentions: { ...set, intentions: [l7('api', [{ Action: 'allow', HTTP: { PathPrefix: '/new' } }]), ...set.intentions.slice(1)] } });
    const [fresh] = [...authorizer.policies.keys()];
    assert.ok(fresh !== undefined && fresh !== old && !authorizer.policies.has(old));
    assert.equal(intVar(authorizer.handle([permissionsMessage(old, 'GET', '/ok/1')]), 'authz'), 1, 'decided by the old policy');
    assert.equal(intVar(authorizer.handle([permissionsMessage(old, 'GET', '/new')]), 'authz'), 0, 'the old policy, not the new one');
    assert.equal(intVar(authorizer.handle([permissionsMessage(fresh, 'GET', '/new')]), 'authz'), 1);
    now += RETIRED_POLICY_MS - 1;
    assert.equal(intVar(authorizer.handle([permissionsMessage(old, 'GET', '/ok/1')]), 'authz'), 1);
    now += 1;
    assert.equal(intVar(authorizer.handle([permissionsMessage(old, 'GET', '/ok/1')]), 'authz'), 0, 'past RETIRED_POLICY_MS: unknown');
    // Back to the first intentions: the old policy is current again, whatever its retirement said.
    authorizer.update({ intentions: set });
    now += RETIRED_POLICY_MS * 2;
    assert.equal(intVar(authorizer.handle([permissionsMessage(old, 'GET', '/ok/1')]), 'authz'), 1);
    assert.equal(intVar(authorizer.handle([permissionsMessage(fresh, 'GET', '/new')]), 'authz'), 0, 'the second policy expired in turn');
  });

  test('per connection without a certificate: deny (auth 0), whatever the listener', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set, trustDomain: 'x.consul' });
    const actions = authorizer.handle([{ name: SPOE_MESSAGE, args: [{ name: 'http', value: { type: 'int64', value: 1n } }] }]);
    assert.equal(intVar(actions, 'auth'), SPOE_AUTH.deny);
  });
});
