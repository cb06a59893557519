/** The benchmark's pure parts: generator output parsers, percentiles, the problem check. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { percentile } from '../control-plane/case.js';
import { parseFortio, parseWrk } from '../lib/load-tools.js';
import { appConfig, referenceHopA } from '../lib/haproxy-fixtures.js';
import { procKiB, rssKiB } from '../lib/proc-stats.js';
import { probeCell } from '../report.js';

const WRK_OUTPUT = `Running 2s test @ http://127.0.0.1:40557/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.17ms  461.53us  13.04ms   93.21%
    Req/Sec    23.23k     1.05k   24.50k    80.00%
  Latency Distribution
     50%    2.11ms
     75%    2.25ms
     90%    2.42ms
     99%  850.00us
  46234 requests in 2.00s, 3.09MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  23116.97
Transfer/sec:      1.55MB
`;

describe('parseWrk', () => {
  test('reads rate, totals, errors and percentiles with their units', () => {
    assert.deepEqual(parseWrk(WRK_OUTPUT), {
      requestsPerSecond: 23116.97,
      requests: 46234,
      durationS: 2,
      socketErrors: 5,
      non2xx: 7,
      latencyP50Ms: 2.11,
      latencyP99Ms: 0.85,
    });
  });
  test('a report without errors has zero errors', () => {
    const clean = WRK_OUTPUT.replace(/^\s+Socket errors.*\n/m, '').replace(/^\s+Non-2xx.*\n/m, '');
    assert.equal(parseWrk(clean).socketErrors + parseWrk(clean).non2xx, 0);
  });
  test('garbage fails with the output in the message', () => {
    assert.throws(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused'), /cannot parse wrk output: unable to connect/);
  });
});

describe('parseFortio', () => {
  const report = {
    ActualQPS: 497.3,
    RetCodes: { 200: 990, 503: 10 },
    DurationHistogram: {
      Count: 1000,
      Min: 0.0001,
      Max: 0.012,
      Avg: 0.0005,
      Percentiles: [
        { Percentile: 50, Value: 0.000496 },
        { Percentile: 99, Value: 0.00467 },
        { Percentile: 99.9, Value: 0.009 },
      ],
    },
    Unknown: 'ignored',
  };
  test('converts seconds to microseconds and counts non-200 answers as errors', () => {
    const r = parseFortio(JSON.stringify(report), 500);
    assert.equal(r.requests, 1000);
    assert.equal(r.errors, 10);
    assert.equal(Math.round(r.p50Us), 496);
    assert.equal(Math.round(r.p999Us), 9000);
    assert.equal(r.targetQps, 500);
  });
  test('a missing percentile is an error naming what is there', () => {
    const partial = { ...report, DurationHistogram: { ...report.DurationHistogram, Percentiles: [{ Percentile: 50, Value: 0.001 }] } };
    assert.throws(() => parseFortio(JSON.stringify(partial), 500), /no p99/);
  });
});

describe('procKiB', () => {
  test('reads status and smaps_rollup fields of a live process', () => {
    const rss = procKiB(process.pid, 'status', 'VmRSS');
    assert.ok(rss > 10_000, `VmRSS ${rss} KiB`);
    assert.ok(Math.abs(rssKiB(process.pid) - rss) < 5_000);
    const pss = procKiB(process.pid, 'smaps_rollup', 'Pss');
    assert.ok(pss > 0 && pss <= rss + 5_000, `Pss ${pss} KiB, VmRSS ${rss} KiB`);
  });
  test('a missing field or a process that is gone reads 0', () => {
    assert.equal(procKiB(process.pid, 'status', 'NoSuchField'), 0);
    assert.equal(procKiB(2 ** 22 + 1, 'status', 'VmRSS'), 0);
  });
});

describe('percentile (nearest rank)', () => {
  test('p50 and p99 of 1..100', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.equal(percentile(xs, 50), 50);
    assert.equal(percentile(xs, 99), 99);
    assert.equal(percentile(xs, 100), 100);
  });
  test('small samples: p99 of 5 is the maximum', () => assert.equal(percentile([3, 1, 2, 5, 4], 99), 5));
  test('no samples is NaN', () => assert.ok(Number.isNaN(percentile([], 50))));
});

describe('fixtures', () => {
  test('the app answers a fixed word and refuses anything else', () => {
    assert.match(appConfig(8080, 'ok'), /http-request return status 200 content-type text\/plain string ok/);
    assert.throws(() => appConfig(8080, 'o k'), /plain word/);
  });
  test('http-reuse always only in HTTP mode', () => {
    const certs = { caFile: '/c/ca.pem', serverPem: '/c/s.pem', clientPem: '/c/c.pem' };
    const ports = { entry: 1, mtls: 2, app: 3 };
    assert.match(referenceHopA('http', ports, certs), /http-reuse always/);
    assert.doesNotMatch(referenceHopA('tcp', ports, certs), /http-reuse/);
  });
});

describe('probeCell (the "failed probe requests" column)', () => {
  test('a case that sent no probe request says n/a, never 0 / 0', () => {
    assert.equal(probeCell(0, 0), 'n/a');
    assert.equal(probeCell(0, 1200), '0 / 1,200');
    assert.equal(probeCell(3, 1200), '3 / 1,200');
  });
});
