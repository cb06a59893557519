/**
 * The hooks the watch-health metrics read: every answer (changed or not) reaches `onSuccess` with
 * the watch's name, failures reach `onError`, and the metrics follow both.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitFor } from '../../devtools/ports.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { SidecarWatches } from '../../src/snapshot/watches.js';
import { HaproxyConnectError } from '../../src/errors.js';
import type { ProxyRegistration } from '../../src/domain/snapshot.js';
import { SidecarMetrics } from '../../src/telemetry/metrics.js';
import { roots, snapshot, webLeaf } from '../helpers/fixtures.js';
import { parseExposition, sampleValue } from '../helpers/prometheus.js';

describe('watch health', () => {
  test('answers and failures reach the hooks by watch name, and the metrics follow', async () => {
    const consul = new FakeConsulAgentApi();
    consul.setRegistration(snapshot().registration as ProxyRegistration);
    consul.setLeaf('web', webLeaf());
    consul.setRoots(roots());
    const root = new AbortController();
    let watches: SidecarWatches | undefined;
    const metrics = new SidecarMetrics(
      { version: 't', haproxyVersion: 'h', nodeVersion: 'n' },
      {
        ready: () => true,
        haproxyState: () => 'running',
        leafValidBefore: () => webLeaf().validBefore,
        caRoots: () => 1,
        runningWatches: () => watches?.running() ?? [],
        spoe: () => undefined,
      },
    );
    const answered: string[] = [];
    consul.failNext(2, new HaproxyConnectError('CONSUL_UNREACHABLE', 'agent down'), 'roots');
    watches = new SidecarWatches({
      api: consul,
      proxyId: 'web-sidecar-proxy',
      datacenter: 'dc1',
      signal: root.signal,
      emit: () => {},
      onError: ({ watch, attempt }) => metrics.watchFailed(watch, attempt),
      onSuccess: (watch) => {
        answered.push(watch);
        metrics.watchAnswered(watch);
      },
    });
    watches.start();
    const value = async (watch: string, state: string): Promise<number | undefined> => sampleValue(parseExposition(await metrics.exposition()), 'haproxy_connect_consul_watches', { watch, state });
    await waitFor('roots answered after two failures', async () => (answered.includes('roots') ? true : undefined), 10_000, 10);
    assert.equal(await value('roots', 'ok'), 1);
    assert.equal(await value('roots', 'failing'), 0);
    assert.equal(sampleValue(parseExposition(await metrics.exposition()), 'haproxy_connect_consul_watch_errors_total', { watch: 'roots' }), 2);
    assert.ok(answered.includes('registration:web-sidecar-proxy'));

    // An expired blocking query is an answer without a change: still reported.
    const before = answered.filter((w) => w === 'leaf:web').length;
    await waitFor('leaf blocked', async () => (consul.blockedCalls >= 3 ? true : undefined), 5_000, 10);
    consul.expireBlockingQueries();
    await waitFor('leaf answered again', async () => (answered.filter((w) => w === 'leaf:web').length > before ? true : undefined), 5_000, 10);
    root.abort();
    await watches.stopped();
  });
});
