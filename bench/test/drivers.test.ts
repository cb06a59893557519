/** The control-plane results of both drivers: finding the Data Plane API processes, their RSS, the table, the problem check. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { summarize, type ControlPlaneResult } from '../control-plane/case.js';
import { dataplaneConfigOf, summarizePeaks } from '../lib/dataplane-rss.js';
import { PROFILES } from '../profile.js';
import { controlPlaneTable, dataplaneRssCell, findProblems, renderMarkdown, type Results } from '../report.js';

const BIN = '/opt/dpapi/bin/dataplaneapi';

describe('dataplaneConfigOf', () => {
  test('reads the configuration of an API started from the binary', () => {
    assert.equal(dataplaneConfigOf(`${BIN}\0-f\0/run/hc-1/dataplaneapi.yaml\0`, BIN), '/run/hc-1/dataplaneapi.yaml');
  });
  test('ignores another binary, another configuration file and a process without -f', () => {
    assert.equal(dataplaneConfigOf(`/usr/bin/dataplaneapi\0-f\0/run/hc-1/dataplaneapi.yaml\0`, BIN), undefined);
    assert.equal(dataplaneConfigOf(`${BIN}\0-f\0/etc/haproxy/dataplaneapi.yml\0`, BIN), undefined);
    assert.equal(dataplaneConfigOf(`${BIN}\0--version\0`, BIN), undefined);
    assert.equal(dataplaneConfigOf('', BIN), undefined);
  });
});

describe('summarizePeaks', () => {
  test('mean of the per-sidecar peaks and the highest, in MiB', () => {
    assert.deepEqual(
      summarizePeaks(
        new Map([
          ['/a/dataplaneapi.yaml', 30 * 1024],
          ['/b/dataplaneapi.yaml', 40 * 1024],
        ]),
      ),
      { sidecars: 2, maxMiB: 40, meanPeakMiB: 35 },
    );
  });
  test('nothing seen is undefined, shown as a dash', () => {
    assert.equal(summarizePeaks(new Map()), undefined);
    assert.equal(dataplaneRssCell(undefined), '–');
  });
});

const native = (name: string, reloads?: number): ControlPlaneResult => ({ ...summarize(name, `${name} happens`, [10, 20], 40, 0), driver: 'native', ...(reloads !== undefined && { reloads }) });
const dataplane = (name: string, reloads: number): ControlPlaneResult => ({
  ...summarize(name, `${name} happens`, [30, 50], 40, 0),
  driver: 'dataplane',
  reloads,
  dataplaneApiRss: { sidecars: 3, maxMiB: 41.04, meanPeakMiB: 38.52 },
});

describe('controlPlaneTable', () => {
  test('native results only: the table without a driver column', () => {
    const lines = controlPlaneTable([native('endpoint-added', 0), { ...summarize('ca-rotated', 'rotation', [5], 0, 0) }]);
    assert.equal(lines[0], '| control-plane case | repeats | p50 ms | p99 ms | max ms | failed probe requests | reloads |');
    assert.equal(lines[2], '| endpoint-added: endpoint-added happens | 2 | 10.0 | 20.0 | 20.0 | 0 / 40 | 0 |');
    assert.equal(lines[3], '| ca-rotated: rotation | 1 | 5.0 | 5.0 | 5.0 | n/a | – |');
  });
  test('with dataplane results: rows of one result together, native first, with the API RSS', () => {
    const lines = controlPlaneTable([native('endpoint-added', 0), native('endpoint-removed', 0), dataplane('endpoint-added', 5), dataplane('endpoint-removed', 5)]);
    assert.match(lines[0] ?? '', /\| driver \|.*\| Data Plane API RSS MiB \|$/);
    assert.deepEqual(
      lines.slice(2).map((l) => l.split(' | ').slice(0, 2).join(' | ')),
      [
        '| endpoint-added: endpoint-added happens | native',
        '| endpoint-added: endpoint-added happens | dataplane',
        '| endpoint-removed: endpoint-removed happens | native',
        '| endpoint-removed: endpoint-removed happens | dataplane',
      ],
    );
    assert.match(lines[3] ?? '', /\| 2 \| 30\.0 \| 50\.0 \| 50\.0 \| 0 \/ 40 \| 5 \| 38\.5 \(max 41\.0, 3 sidecars\) \|$/);
    assert.match(lines[2] ?? '', /\| 0 \| – \|$/);
  });
});

function results(controlPlane: ControlPlaneResult[], drivers: Results['drivers']): Results {
  return {
    startedAt: 't0',
    finishedAt: 't1',
    profile: PROFILES.quick,
    environment: {
      haproxy: 'HAProxy version 2.6',
      openssl: 'OpenSSL 3',
      node: '20',
      consul: 'Consul 1.16',
      haproxyConnect: '0',
      wrk: 'wrk 4',
      fortio: '1',
      kernel: '6',
      cpuCount: 2,
      cpuModel: 'cpu',
      gitCommit: 'abc',
    },
    machine: { loadAverageAtStart: 0, loadAverageAtEnd: 0, busyNote: '', pinning: 'none', daemonFrom: 'tsx' },
    paths: [],
    dataPlaneRuns: [],
    controlPlane,
    ...(drivers !== undefined && { drivers }),
  };
}

describe('renderMarkdown and findProblems with drivers', () => {
  test('a native-only run says how to get the dataplane rows', () => {
    assert.match(renderMarkdown(results([native('endpoint-added')], ['native'])), /native driver only: set DATAPLANEAPI_BIN/);
    assert.doesNotMatch(renderMarkdown(results([native('endpoint-added'), dataplane('endpoint-added', 1)], ['native', 'dataplane'])), /native driver only/);
  });
  test('a dataplane result missing is a problem of its own; the native one does not stand in for it', () => {
    const expected = [
      { name: 'endpoint-added', samples: 2, driver: 'native' as const },
      { name: 'endpoint-added', samples: 2, driver: 'dataplane' as const },
    ];
    assert.deepEqual(findProblems(results([native('endpoint-added')], ['native', 'dataplane']), [], expected, 0.01), ['control-plane case endpoint-added (dataplane driver) did not run']);
    assert.deepEqual(findProblems(results([native('endpoint-added'), dataplane('endpoint-added', 1)], ['native', 'dataplane']), [], expected, 0.01), []);
  });
  test('results without a driver count as native', () => {
    const { driver: _, ...untagged } = native('endpoint-added');
    assert.deepEqual(findProblems(results([untagged], undefined), [], [{ name: 'endpoint-added', samples: 2 }], 0.01), []);
  });
});
