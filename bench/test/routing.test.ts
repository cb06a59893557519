/** The routed path's router and rule count, the metrics reader, and the routing line of the report. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sumSamples } from '../lib/prometheus.js';
import { ROUTED_PATH_ROUTES, routedPathRouter, routeRulesOfFrontend } from '../lib/routed-path.js';
import { routingCostTable, type PathSummary } from '../report.js';

describe('routedPathRouter', () => {
  const router = routedPathRouter('hc-dst-routed');
  test('ten routes, every one to the routed service, the last the catch-all', () => {
    assert.equal(router.Routes.length, ROUTED_PATH_ROUTES);
    assert.ok(router.Routes.every((r) => r.Destination['Service'] === 'hc-dst-routed'));
    assert.deepEqual(router.Routes.at(-1)?.Match, { HTTP: { PathPrefix: '/' } });
  });
  test('no route before the catch-all takes the benchmark request (GET /, no query, none of the headers)', () => {
    for (const { Match } of router.Routes.slice(0, -1)) {
      const http = Match.HTTP;
      const pathTakesRoot = (http.PathPrefix === undefined || http.PathPrefix === '/') && http.PathExact === undefined && (http.PathRegex === undefined || new RegExp(`^${http.PathRegex}$`).test('/'));
      const methodTakesGet = http.Methods === undefined || http.Methods.includes('GET');
      const noHeaderOrQuery = (http.Header ?? []).length === 0 && (http.QueryParam ?? []).length === 0;
      assert.ok(!(pathTakesRoot && methodTakesGet && noHeaderOrQuery), JSON.stringify(http));
    }
  });
});

describe('routeRulesOfFrontend', () => {
  const cfg = [
    'frontend upstream_a',
    '    mode http',
    '    bind 127.0.0.1:9191',
    '    http-request set-var(txn.route) int(0) if !{ var(txn.route) -m found } { pathq -m beg /admin }',
    '    http-request set-var(txn.route) int(1) if !{ var(txn.route) -m found }',
    '    http-request set-var(txn.rto) int(2000) if { var(txn.route) -m int eq 0 }',
    '',
    'frontend upstream_b',
    '    bind 127.0.0.1:91910',
    '    default_backend b',
    '',
    'backend b',
    '    http-request set-var(txn.route) int(0)',
  ].join('\n');
  test('counts the selection rules of the frontend bound to the port', () => assert.equal(routeRulesOfFrontend(cfg, 9191), 2));
  test('an unrouted frontend has none; an unbound port is undefined', () => {
    assert.equal(routeRulesOfFrontend(cfg, 91910), 0);
    assert.equal(routeRulesOfFrontend(cfg, 919), undefined);
  });
});

describe('sumSamples', () => {
  const text = [
    '# HELP haproxy_connect_config_applies_total Configuration changes',
    '# TYPE haproxy_connect_config_applies_total counter',
    'haproxy_connect_config_applies_total{method="reload",result="ok"} 3',
    'haproxy_connect_config_applies_total{method="reload",result="failed"} 1',
    'haproxy_connect_config_applies_total{method="runtime",result="ok"} 7',
    'haproxy_connect_config_applies_total_other{method="reload"} 100',
    'haproxy_process_start_time_seconds 1.7e9',
  ].join('\n');
  test('sums the samples whose labels match', () => {
    assert.equal(sumSamples(text, 'haproxy_connect_config_applies_total', { method: 'reload' }), 4);
    assert.equal(sumSamples(text, 'haproxy_connect_config_applies_total'), 11);
    assert.equal(sumSamples(text, 'haproxy_process_start_time_seconds'), 1.7e9);
  });
  test('nothing matching is 0', () => assert.equal(sumSamples(text, 'haproxy_connect_config_applies_total', { method: 'none' }), 0));
});

describe('routingCostTable', () => {
  const path = (name: string, source: number[], destination: number[], p99: number[]): PathSummary => ({
    path: name,
    description: '',
    keepAliveRps: [],
    connectionCloseRps: [],
    p50Us: p99.map((x) => x / 4),
    p99Us: p99,
    p999Us: [],
    newConnectionP50Us: [],
    newConnectionP99Us: [],
    cpuUsPerRequest: name === 'direct' ? { app: [1] } : { 'source sidecar': source, 'destination sidecar': destination, app: [1] },
    tail: [],
    rssKiB: {},
    errors: 0,
    requests: 1,
  });
  test('the routed path next to hc-http, the reference and direct as the floor: medians of the rounds, differences over hc-http', () => {
    const table = routingCostTable([
      path('direct', [], [], [600, 700, 800]),
      path('reference-http', [100], [80], [900]),
      path('hc-http', [118, 120, 130], [90, 90, 91], [1000, 1040, 1200]),
      path('hc-http-routed', [125, 126], [90, 90], [1100, 1100]),
    ]);
    assert.deepEqual(table?.slice(2), [
      '| path | CPU µs/req source sidecar | CPU µs/req destination sidecar | CPU µs/req sidecars | over hc-http | p50 µs | p99 µs |',
      '|---|---|---|---|---|---|---|',
      '| direct | – | – | – | – | 175 [150–200] | 700 [600–800] |',
      '| reference-http | 100.0 | 80.0 | 180.0 | -30.0 (source sidecar -20.0) | 225 | 900 |',
      '| hc-http | 120.0 [118.0–130.0] | 90.0 [90.0–91.0] | 210.0 [208.0–221.0] | – | 260 [250–300] | 1,040 [1,000–1,200] |',
      '| hc-http-routed | 125.5 [125.0–126.0] | 90.0 | 215.5 [215.0–216.0] | +5.5 (source sidecar +5.5) | 275 | 1,100 |',
    ]);
  });
  test('without direct (an older testbed), the other rows alone', () => {
    const table = routingCostTable([path('hc-http', [1], [1], [1]), path('hc-http-routed', [2], [2], [2])]);
    assert.deepEqual(
      table?.slice(4).map((l) => l.split(' | ')[0]),
      ['| hc-http', '| hc-http-routed'],
    );
  });
  test('absent without both paths, or without their fixed-rate runs', () => {
    assert.equal(routingCostTable([path('hc-http', [1], [1], [1])]), undefined);
    assert.equal(routingCostTable([path('hc-http', [1], [1], [1]), { ...path('hc-http-routed', [], [], []), cpuUsPerRequest: {} }]), undefined);
  });
});
