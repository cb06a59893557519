/**
 * The routes of a compiled HTTP discovery chain (consul/chain-routes.ts): a router → splitter →
 * resolver chain as Consul 1.16.2 answered it (L7.md §1.3), Envoy's split arithmetic, retry
 * mapping, and what is refused (the chain) or left out (a retry condition).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { chainFromCompiled } from '../../src/consul/discovery-chain.js';
import { discoveryChainSchema } from '../../src/consul/schemas.js';
import { TOTAL_SPLIT_WEIGHT, envoySplitWeights } from '../../src/domain/routes.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { checkChainRoutes } from '../../src/sidecar/intake.js';
import { type Json, routedChainJson } from '../helpers/chains.js';

const example = routedChainJson;

const parse = (json: Json) => chainFromCompiled('service:default/api@', discoveryChainSchema.parse(json).Chain, 'dc1');

describe('routes of a compiled chain', () => {
  test('router → splitter → resolvers: routes in order, legs with weights, failover targets, retries mapped', () => {
    const chain = parse(example());
    const routes = chain.routes ?? [];
    assert.equal(routes.length, 3);
    const [admin, query, catchAll] = routes;
    assert.deepEqual(admin?.match, {
      path: { kind: 'prefix', value: '/admin' },
      methods: ['GET', 'POST'],
      headers: [{ name: 'x-debug', match: { kind: 'exact', value: '1' }, invert: true }],
      queryParams: [],
    });
    assert.equal(admin?.prefixRewrite, '/');
    assert.equal(admin?.requestTimeoutMs, 2_000);
    // 5xx and reset map onto HAProxy's conditions; 503 is among 5xx already.
    assert.deepEqual(admin?.retry, { numRetries: 3, on: ['500', '501', '502', '503', '504', 'conn-failure', 'empty-response', 'junk-response'] });
    assert.deepEqual(admin?.responseHeaders, { add: [['x-route', 'admin']], set: [], remove: ['server'] });
    assert.deepEqual(
      admin?.legs.map((l) => [l.weight, l.targets]),
      [[TOTAL_SPLIT_WEIGHT, ['v2.api.default.default.dc1']]],
    );
    // RetryOnConnectFailure alone: Envoy's default of one retry.
    assert.deepEqual(query?.retry, { numRetries: 1, on: ['conn-failure'] });
    assert.deepEqual(query?.match.queryParams, [{ name: 'v', match: { kind: 'exact', value: '2' } }]);
    assert.equal(query?.requestTimeoutMs, undefined, 'no RequestTimeout: the default applies later');
    // The catch-all goes to the splitter; the resolver's RequestTimeout is ignored behind a router.
    assert.equal(catchAll?.requestTimeoutMs, undefined);
    assert.equal(catchAll?.retry, undefined);
    assert.deepEqual(
      catchAll?.legs.map((l) => [l.weight, l.targets, l.requestHeaders.set]),
      [
        [9_000, ['v1.api.default.default.dc1', 'api-backup.default.default.dc1'], []],
        [1_000, ['v2.api.default.default.dc1'], [['x-canary', '1']]],
      ],
    );
    assert.deepEqual(
      chain.targets.map((t) => t.id),
      ['v2.api.default.default.dc1', 'api-v2.default.default.dc1', 'v1.api.default.default.dc1', 'api-backup.default.default.dc1'],
    );
    assert.equal(chain.refused, undefined);
  });

  test("a chain that starts at a resolver: one catch-all route with the resolver's RequestTimeout", () => {
    const json = example();
    const chain = json['Chain'] as Json;
    chain['StartNode'] = 'resolver:v1.api.default.default.dc1';
    const routes = parse(json).routes ?? [];
    assert.equal(routes.length, 1);
    assert.equal(routes[0]?.requestTimeoutMs, 10_000);
    assert.deepEqual(routes[0]?.match, { methods: [], headers: [], queryParams: [] });
  });

  test('what Envoy would refuse throws (the watch keeps the last good chain), naming the value', () => {
    const cases: Array<[string, Json, RegExp]> = [
      [
        'lookahead',
        example({ routes: [{ Definition: { Match: { HTTP: { PathRegex: '/a(?=b)' } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /PathRegex regex "\/a\(\?=b\)" is not valid RE2/,
      ],
      [
        'header regex backreference',
        example({ routes: [{ Definition: { Match: { HTTP: { Header: [{ Name: 'x', Regex: '(a)\\1' }] } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /Header\[0\] regex "\(a\)\\\\1" is not valid RE2/,
      ],
      [
        'placeholder',
        example({ routes: [{ Definition: { Destination: { RequestHeaders: { Set: { 'x-ip': '%DOWNSTREAM_REMOTE_ADDRESS%' } } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /value "%DOWNSTREAM_REMOTE_ADDRESS%" uses an Envoy placeholder/,
      ],
      [
        'header name',
        example({ routes: [{ Definition: { Destination: { RequestHeaders: { Set: { 'x y': '1' } } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /header name "x y" is not an HTTP token/,
      ],
      [
        'header value with a line break',
        example({ routes: [{ Definition: { Destination: { ResponseHeaders: { Add: { 'x-a': 'v\r\nx-evil: 1' } } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /value "v\\r\\nx-evil: 1" holds a line break or NUL/,
      ],
      [
        'pseudo-header matcher',
        example({ routes: [{ Definition: { Match: { HTTP: { Header: [{ Name: ':path', Exact: '/a' }] } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }),
        /matches the pseudo-header ":path", which is not supported/,
      ],
      [
        'weights over 100',
        example({
          splits: [
            { Weight: 60, NextNode: 'resolver:v1.api.default.default.dc1' },
            { Weight: 60, NextNode: 'resolver:v2.api.default.default.dc1' },
          ],
        }),
        /weights \[60,60\] do not add up to 100/,
      ],
    ];
    for (const [name, json, message] of cases) {
      assert.throws(
        () => parse(json),
        (err: unknown) => isHaproxyConnectError(err, 'CONSUL_RESPONSE_INVALID') && message.test(err.message),
        name,
      );
    }
  });

  test('a retry condition HAProxy lacks is left out by name; the rest of the policy applies', () => {
    const chain = parse(
      example({
        routes: [{ Definition: { Destination: { RetryOn: ['retriable-4xx', 'gateway-error'], RetryOnStatusCodes: [409, 404] } }, NextNode: 'resolver:v2.api.default.default.dc1' }],
      }),
    );
    assert.deepEqual(chain.routes?.[0]?.retry, { numRetries: 1, on: ['404', '502', '503', '504', 'conn-failure', 'empty-response', 'junk-response'] });
    assert.equal(chain.refused?.length, 2);
    assert.match(chain.refused?.[0] ?? '', /RetryOn "retriable-4xx" has no HAProxy equivalent/);
    assert.match(chain.refused?.[1] ?? '', /RetryOnStatusCodes 409/);
  });

  test('a split whose weight Consul left out (a zero weight, omitempty) takes no request', () => {
    const chain = parse(
      example({
        splits: [{ Weight: 100, NextNode: 'resolver:v1.api.default.default.dc1' }, { NextNode: 'resolver:v2.api.default.default.dc1' }],
      }),
    );
    assert.deepEqual(
      chain.routes?.at(-1)?.legs.map((l) => l.weight),
      [10_000, 0],
    );
  });

  test("'%%' in a header value is a literal '%'; empty values are skipped as Envoy skips them", () => {
    const chain = parse(example({ routes: [{ Definition: { Destination: { RequestHeaders: { Add: { 'x-a': '100%%', 'x-b': '' } } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }));
    assert.deepEqual(chain.routes?.[0]?.requestHeaders.add, [['x-a', '100%']]);
  });
});

describe('checkChainRoutes (the sidecar refuses a chain HAProxy cannot take; the upstream keeps its last good one)', () => {
  test('a route whose inverted matchers expand past the rule limit is refused, naming the upstream and the route', () => {
    const headers = Array.from({ length: 7 }, (_, i) => ({ Name: `x-h${i}`, Exact: 'v', Invert: true }));
    const chain = parse(example({ routes: [{ Definition: { Match: { HTTP: { Header: headers } } }, NextNode: 'resolver:v2.api.default.default.dc1' }] }));
    assert.throws(
      () => checkChainRoutes('service:default/api@', chain),
      (err: unknown) => isHaproxyConnectError(err, 'CONSUL_RESPONSE_INVALID') && /upstream service:default\/api@: route 0 cannot be configured in HAProxy: .*128 alternatives/.test(err.message),
    );
    assert.doesNotThrow(() => checkChainRoutes('service:default/api@', parse(example())));
  });
});

describe('envoySplitWeights', () => {
  test("Consul's float32 truncation, the remainder to the first leg", () => {
    assert.deepEqual(envoySplitWeights([90, 10]), [9_000, 1_000]);
    assert.deepEqual(envoySplitWeights([33.33, 33.33, 33.34]), [3_333, 3_333, 3_334]);
    // float32(0.53) * 100 = 52.999…: truncated to 52, the lost 0.01 % goes to the first leg.
    assert.deepEqual(envoySplitWeights([99.47, 0.53]), [9_948, 52]);
    assert.equal(envoySplitWeights([60, 60]), undefined);
    assert.equal(envoySplitWeights([]), undefined);
  });

  test('any weights of two decimals that sum to 100 give 10000 in all', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 10_000 }), { minLength: 1, maxLength: 6 }), (raw) => {
        const total = raw.reduce((a, b) => a + b, 0);
        fc.pre(total > 0);
        // Hundredths that sum to exactly 10000, as Consul validates splitter weights.
        const hundredths = raw.map((r) => Math.floor((r * 10_000) / total));
        hundredths[0] = (hundredths[0] as number) + 10_000 - hundredths.reduce((a, b) => a + b, 0);
        const weights = envoySplitWeights(hundredths.map((h) => h / 100)) ?? [];
        assert.equal(
          weights.reduce((a, b) => a + b, 0),
          TOTAL_SPLIT_WEIGHT,
        );
        assert.ok(weights.every((w, i) => w >= 0 && Math.abs(w - (hundredths[i] as number)) <= (i === 0 ? weights.length : 1)));
      }),
      { seed: 42, numRuns: 300 },
    );
  });
});
