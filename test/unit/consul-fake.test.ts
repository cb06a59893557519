import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { HaproxyConnectError, isHaproxyConnectError } from '../../src/errors.js';
import type { Leaf, ProxyRegistration, Roots } from '../../src/domain/snapshot.js';
import { waitFor } from '../../devtools/ports.js';
import { snapshot } from '../helpers/fixtures.js';

const registration: ProxyRegistration = snapshot().registration as ProxyRegistration;
const leaf: Leaf = { certPem: 'C', privateKeyPem: 'K', serialNumber: '1', validBefore: '2030-01-01T00:00:00Z', modifyIndex: 1 };
const roots: Roots = { trustDomain: 'td', activeRootId: 'r', roots: [] };
const db = { destinationName: 'db', destinationNamespace: 'default', datacenter: '' };

const until = (predicate: () => boolean): Promise<true> => waitFor('the fake to reach a state', async () => (predicate() ? true : undefined), 2_000, 2);

describe('FakeConsulAgentApi', () => {
  test('blocking index query waits for a newer version', async () => {
    const fake = new FakeConsulAgentApi();
    fake.setRoots(roots);
    const s = new AbortController().signal;
    const first = await fake.roots({}, s);
    let settled = false;
    const next = fake.roots(first.cursor, s).then((v) => {
      settled = true;
      return v;
    });
    await until(() => fake.blockedCalls === 1);
    assert.equal(settled, false);
    fake.setRoots({ ...roots, activeRootId: 'r2' });
    const got = await next;
    assert.equal(got.value.activeRootId, 'r2');
    assert.ok((got.cursor.index ?? 0) > (first.cursor.index ?? 0));
  });

  test('leaf blocks until it is issued; expiry returns the same cursor', async () => {
    const fake = new FakeConsulAgentApi();
    const s = new AbortController().signal;
    const pending = fake.leaf('web', {}, s);
    await until(() => fake.blockedCalls === 1);
    fake.expireBlockingQueries(); // still absent: keeps waiting
    assert.equal(fake.blockedCalls, 1);
    fake.setLeaf('web', leaf);
    const got = await pending;
    const again = fake.leaf('web', got.cursor, s);
    await until(() => fake.blockedCalls === 1);
    fake.expireBlockingQueries();
    assert.deepEqual((await again).cursor, got.cursor);
  });

  test('hash-based registration; removal is SIDECAR_NOT_FOUND', async () => {
    const fake = new FakeConsulAgentApi();
    fake.setRegistration(registration);
    const s = new AbortController().signal;
    const first = await fake.proxyRegistration('web-sidecar-proxy', {}, s);
    assert.deepEqual(first.value, registration);
    const pending = fake.proxyRegistration('web-sidecar-proxy', first.cursor, s);
    await until(() => fake.blockedCalls === 1);
    fake.removeRegistration('web-sidecar-proxy');
    await assert.rejects(pending, (e: unknown) => isHaproxyConnectError(e, 'SIDECAR_NOT_FOUND'));
  });

  test('endpoints: unknown upstream is an empty list; updates wake watchers', async () => {
    const fake = new FakeConsulAgentApi();
    const s = new AbortController().signal;
    const empty = await fake.upstreamEndpoints(db, {}, s);
    assert.deepEqual(empty.value, []);
    const pending = fake.upstreamEndpoints(db, empty.cursor, s);
    await until(() => fake.blockedCalls === 1);
    fake.setEndpoints(db, [{ id: 'n/p', node: 'n', address: '10.0.0.1', port: 1, weight: 1 }]);
    assert.equal((await pending).value.length, 1);
  });

  test('mesh config entry: none reads as the defaults; a write wakes watchers; a delete is the defaults at a new index', async () => {
    const fake = new FakeConsulAgentApi();
    const s = new AbortController().signal;
    const none = await fake.meshConfig({}, s);
    assert.deepEqual(none.value, { sanitizeXForwardedClientCert: false });
    const pending = fake.meshConfig(none.cursor, s);
    await until(() => fake.blockedCalls === 1);
    fake.setMeshConfig({ sanitizeXForwardedClientCert: true });
    const written = await pending;
    assert.deepEqual(written.value, { sanitizeXForwardedClientCert: true });
    const deleted = fake.meshConfig(written.cursor, s);
    await until(() => fake.blockedCalls === 1);
    fake.setMeshConfig(undefined);
    const after = await deleted;
    assert.deepEqual(after.value, { sanitizeXForwardedClientCert: false });
    assert.ok((after.cursor.index ?? 0) > (written.cursor.index ?? 0));
  });

  test('failNext fails the next N calls (optionally of one method)', async () => {
    const fake = new FakeConsulAgentApi();
    fake.setRoots(roots);
    const s = new AbortController().signal;
    fake.failNext(2, new HaproxyConnectError('CONSUL_UNREACHABLE', 'down'), 'roots');
    assert.deepEqual(await fake.agentSelf(s), { datacenter: 'dc1', nodeName: 'node1' });
    await assert.rejects(fake.roots({}, s), /down/);
    await assert.rejects(fake.roots({}, s), /down/);
    assert.equal((await fake.roots({}, s)).value.trustDomain, 'td');
    assert.equal(fake.callsOf('roots'), 3);
  });

  test('abort releases a blocked call with the reason', async () => {
    const fake = new FakeConsulAgentApi();
    fake.setRoots(roots);
    const c = new AbortController();
    const first = await fake.roots({}, c.signal);
    const pending = fake.roots(first.cursor, c.signal);
    await until(() => fake.blockedCalls === 1);
    const reason = new Error('stop');
    c.abort(reason);
    await assert.rejects(pending, (e: unknown) => e === reason);
    assert.equal(fake.blockedCalls, 0);
  });

  test('returned values are copies', async () => {
    const fake = new FakeConsulAgentApi();
    fake.setPreparedQuery('q', [{ id: 'a', node: 'n', address: 'x', port: 1, weight: 1 }]);
    const s = new AbortController().signal;
    const got = await fake.preparedQueryEndpoints({ ...db, destinationName: 'q' }, s);
    got.pop();
    assert.equal((await fake.preparedQueryEndpoints({ ...db, destinationName: 'q' }, s)).length, 1);
    await assert.rejects(fake.preparedQueryEndpoints(db, s), (e: unknown) => isHaproxyConnectError(e, 'CONSUL_HTTP'));
  });
});
