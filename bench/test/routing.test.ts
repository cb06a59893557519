/** The routed path's router and rule count, the metrics reader, and the routing line of the report. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sumSamples } from '../lib/prometheus.js';
import { ROUTED_PATH_ROUTES, routedPathRouter, routeRulesOfFrontend } from '../lib/routed-path.js';
import { routingCostLine, type PathSummary } from '../report.js';

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

describe('routingCostLine', () => {
  const path = (name: string, source: number, destination: number, p99: number): PathSummary => ({
    path: name,
    description: '',
    keepAliveRps: [],
    connectionCloseRps: [],
    p50Us: [],
    p99Us: [p99],
    p999Us: [],
    newConnectionP50Us: [],
    newConnectionP99Us: [],
    cpuUsPerRequest: { 'source sidecar': source, 'destination sidecar': destination, app: 1 },
    rssKiB: {},
    errors: 0,
    requests: 1,
  });
  test('the routed path next to hc-http and the reference', () => {
    const line = routingCostLine([path('reference-http', 100, 80, 900), path('hc-http', 120, 90, 1000), path('hc-http-routed', 125, 90, 1100)]);
    assert.equal(
      line,
      "Routing: sidecars' CPU per request (source + destination) hc-http-routed 215.0 µs, hc-http 210.0 µs (+5.0; source sidecar +5.0); p99 1,100 µs vs 1,000 µs; reference-http 180.0 µs/req, p99 900 µs.",
    );
  });
  test('absent without both paths, or without their fixed-rate runs', () => {
    assert.equal(routingCostLine([path('hc-http', 1, 1, 1)]), undefined);
    assert.equal(routingCostLine([path('hc-http', 1, 1, 1), { ...path('hc-http-routed', 1, 1, 1), p99Us: [], cpuUsPerRequest: {} }]), undefined);
  });
});
