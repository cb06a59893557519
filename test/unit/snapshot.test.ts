import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { selectSidecar } from '../../src/consul/find-sidecar.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { SnapshotState } from '../../src/snapshot/fold.js';
import { trivialChain } from '../../src/domain/chain.js';
import type { Leaf, ProxyRegistration, Roots, Upstream } from '../../src/domain/snapshot.js';

const upstream = (name: string): Upstream => ({
  key: `service:default/${name}@`,
  destinationType: 'service',
  destinationName: name,
  destinationNamespace: 'default',
  datacenter: '',
  localBindAddress: '127.0.0.1',
  localBindPort: 9000,
  localBindSocketPath: undefined,
  localBindSocketMode: undefined,
  protocol: 'tcp',
  connectTimeoutMs: 5000,
});
const registration = (upstreams: Upstream[]): ProxyRegistration => ({
  proxyId: 'web-sidecar-proxy',
  proxyName: 'web-sidecar-proxy',
  serviceName: 'web',
  serviceId: 'web',
  namespace: 'default',
  partition: 'default',
  publicListener: { bindAddress: '0.0.0.0', bindPort: 21000, protocol: 'tcp', localServiceAddress: '127.0.0.1', localServicePort: 8080, localConnectTimeoutMs: 5000, localRequestTimeoutMs: undefined },
  upstreams,
});
const leaf: Leaf = { certPem: 'CERT', privateKeyPem: 'KEY', serialNumber: '01', validBefore: '2030-01-01T00:00:00Z', modifyIndex: 5 };
const roots: Roots = { trustDomain: 'td.consul', activeRootId: 'r1', roots: [{ id: 'r1', rootCertPem: 'ROOT', intermediateCertsPem: [], active: true }] };

describe('SnapshotState', () => {
  test('nothing is rendered before registration, leaf and roots are known', () => {
    const state = new SnapshotState('dc1');
    assert.deepEqual(state.missing(), ['registration', 'leaf', 'roots']);
    state.apply({ kind: 'registration', value: registration([]) });
    state.apply({ kind: 'leaf', value: leaf });
    assert.equal(state.snapshot(), undefined);
    state.apply({ kind: 'roots', value: roots });
    assert.deepEqual(state.missing(), []);
    assert.equal(state.snapshot()?.datacenter, 'dc1');
  });
  test('when intentions are enforced, the snapshot waits for them; otherwise they are ignored', () => {
    const enforced = new SnapshotState('dc1', { enforceIntentions: true });
    enforced.apply({ kind: 'registration', value: registration([]) });
    enforced.apply({ kind: 'leaf', value: leaf });
    enforced.apply({ kind: 'roots', value: roots });
    assert.deepEqual(enforced.missing(), ['intentions']);
    assert.equal(enforced.snapshot(), undefined);
    const set = { intentions: [], defaultAllow: false };
    assert.equal(enforced.apply({ kind: 'intentions', value: set }), true);
    assert.equal(enforced.apply({ kind: 'intentions', value: { ...set } }), false);
    assert.deepEqual(enforced.snapshot()?.intentions, set);

    const off = new SnapshotState('dc1');
    off.apply({ kind: 'registration', value: registration([]) });
    off.apply({ kind: 'leaf', value: leaf });
    off.apply({ kind: 'roots', value: roots });
    assert.equal(off.apply({ kind: 'intentions', value: set }), false);
    assert.equal(off.snapshot()?.intentions, undefined);
  });
  test('a registration for another service drops the old leaf and intentions at once', () => {
    const state = new SnapshotState('dc1', { enforceIntentions: true });
    state.apply({ kind: 'registration', value: registration([]) });
    state.apply({ kind: 'leaf', value: leaf });
    state.apply({ kind: 'roots', value: roots });
    state.apply({ kind: 'intentions', value: { intentions: [], defaultAllow: true } });
    assert.equal(state.serviceIdentity(), 'default/default/web');
    // Same service, other details (an upstream added): the identity stays.
    state.apply({ kind: 'registration', value: registration([upstream('api')]) });
    assert.deepEqual(state.missing(), []);
    // Renamed: nothing of web's identity may serve or decide for the new service.
    state.apply({ kind: 'registration', value: { ...registration([]), serviceName: 'billing', serviceId: 'billing' } });
    assert.equal(state.serviceIdentity(), 'default/default/billing');
    assert.deepEqual(state.missing(), ['leaf', 'intentions']);
    assert.equal(state.snapshot(), undefined);
    state.apply({ kind: 'leaf', value: { ...leaf, serialNumber: '02' } });
    state.apply({ kind: 'intentions', value: { intentions: [], defaultAllow: false } });
    assert.equal(state.snapshot()?.leaf.serialNumber, '02');
    assert.equal(state.snapshot()?.registration.serviceName, 'billing');
  });

  test('the mesh config entry is never waited for: the defaults stand until it arrives; a change is a change, equal data is not', () => {
    const state = new SnapshotState('dc1', { enforceIntentions: false });
    state.apply({ kind: 'registration', value: registration([]) });
    state.apply({ kind: 'leaf', value: leaf });
    state.apply({ kind: 'roots', value: roots });
    assert.deepEqual(state.missing(), []);
    assert.deepEqual(state.snapshot()?.mesh, { sanitizeXForwardedClientCert: false });
    assert.equal(state.apply({ kind: 'mesh', value: { sanitizeXForwardedClientCert: false } }), false, 'no entry: the defaults again');
    assert.equal(state.apply({ kind: 'mesh', value: { sanitizeXForwardedClientCert: true } }), true);
    assert.equal(state.apply({ kind: 'mesh', value: { sanitizeXForwardedClientCert: true } }), false);
    assert.deepEqual(state.snapshot()?.mesh, { sanitizeXForwardedClientCert: true });
    assert.ok(Object.isFrozen(state.snapshot()?.mesh));
    // Known before the rest of the snapshot: kept, and still no part is waited for because of it.
    const early = new SnapshotState('dc1');
    assert.equal(early.apply({ kind: 'mesh', value: { sanitizeXForwardedClientCert: true } }), true);
    assert.deepEqual(early.missing(), ['registration', 'leaf', 'roots']);
    early.apply({ kind: 'registration', value: registration([]) });
    early.apply({ kind: 'leaf', value: leaf });
    early.apply({ kind: 'roots', value: roots });
    assert.equal(early.snapshot()?.mesh.sanitizeXForwardedClientCert, true);
  });

  test('equal data is no change', () => {
    const state = new SnapshotState('dc1');
    assert.equal(state.apply({ kind: 'leaf', value: leaf }), true);
    assert.equal(state.apply({ kind: 'leaf', value: { ...leaf } }), false);
    assert.equal(state.apply({ kind: 'leaf', value: { ...leaf, modifyIndex: 6 } }), true);
  });
  test('the snapshot is organised by upstream (its chain) and target (its endpoints); unused targets are ignored and dropped', () => {
    const state = new SnapshotState('dc1');
    const api = upstream('api');
    const target = 'api.default.default.dc1';
    const ep = [{ id: 'n/api-sidecar-proxy', node: 'n', address: '127.0.0.1', port: 21001, weight: 1 }];
    assert.equal(state.apply({ kind: 'target-endpoints', targetId: target, value: ep }), false);
    state.apply({ kind: 'registration', value: registration([api]) });
    state.apply({ kind: 'leaf', value: leaf });
    state.apply({ kind: 'roots', value: roots });
    // A service upstream waits for its discovery chain, then for the chain's targets.
    assert.deepEqual(state.targetsWithoutAnswer(), [`chain:${api.key}`]);
    assert.equal(state.apply({ kind: 'chain', upstreamKey: 'service:default/other@', value: trivialChain(api, 'dc1') }), false, 'a chain of an unknown upstream');
    assert.equal(state.apply({ kind: 'chain', upstreamKey: api.key, value: trivialChain(api, 'dc1') }), true);
    assert.equal(state.apply({ kind: 'chain', upstreamKey: api.key, value: trivialChain(api, 'dc1') }), false, 'the same chain again');
    assert.deepEqual(state.targetsWithoutAnswer(), [target]);
    assert.deepEqual(
      state
        .snapshot()
        ?.chains.get(api.key)
        ?.targets.map((t) => t.id),
      [target],
    );
    assert.equal(state.apply({ kind: 'target-endpoints', targetId: target, value: ep }), true);
    assert.deepEqual(state.targetsWithoutAnswer(), []);
    assert.deepEqual(state.snapshot()?.targets.get(target), ep);
    state.apply({ kind: 'registration', value: registration([]) });
    assert.equal(state.snapshot()?.targets.has(target), false);
  });
  test('two upstreams that reach the same target share it; the local datacenter is named', () => {
    const state = new SnapshotState('dc1');
    const local = upstream('api');
    const named = { ...upstream('api'), key: 'service:default/api@dc1', datacenter: 'dc1', localBindPort: 9001 };
    const other = { ...upstream('api'), key: 'service:default/api@dc2', datacenter: 'dc2', localBindPort: 9002 };
    state.apply({ kind: 'registration', value: registration([local, named, other]) });
    for (const u of [local, named, other]) state.apply({ kind: 'chain', upstreamKey: u.key, value: trivialChain(u, 'dc1') });
    assert.deepEqual(
      state
        .usedTargets()
        .map((t) => t.id)
        .sort(),
      ['api.default.default.dc1', 'api.default.default.dc2'],
    );
  });
  test('the snapshot is an immutable copy', () => {
    const state = new SnapshotState('dc1');
    const reg = registration([upstream('api')]);
    state.apply({ kind: 'registration', value: reg });
    state.apply({ kind: 'leaf', value: leaf });
    state.apply({ kind: 'roots', value: roots });
    const snap = state.snapshot();
    assert.ok(snap !== undefined);
    assert.throws(() => {
      (snap.registration.upstreams as Upstream[]).push(upstream('x'));
    });
    reg.upstreams.push(upstream('y'));
    assert.equal(state.snapshot()?.registration.upstreams.length, 1);
  });
});

describe('selectSidecar', () => {
  const proxy = (id: string, dest: string, tags: string[] = []) => ({ id, name: `${dest}-sidecar-proxy`, tags, destinationServiceId: dest, destinationServiceName: dest });
  const proxies = [proxy('web-sidecar-proxy', 'web'), proxy('api-blue', 'api', ['blue']), proxy('api-green', 'api', ['green'])];
  test('by service id', () => assert.equal(selectSidecar(proxies, { serviceId: 'web', tag: undefined }, 'a').id, 'web-sidecar-proxy'));
  test('by service id and tag', () => assert.equal(selectSidecar(proxies, { serviceId: 'api', tag: 'green' }, 'a').id, 'api-green'));
  test('by tag alone', () => assert.equal(selectSidecar(proxies, { serviceId: undefined, tag: 'blue' }, 'a').id, 'api-blue'));
  test('none names the service and the agent', () => {
    assert.throws(
      () => selectSidecar(proxies, { serviceId: 'db', tag: undefined }, 'http://127.0.0.1:8500'),
      (err: unknown) => isHaproxyConnectError(err, 'SIDECAR_NOT_FOUND') && err.message === "Cannot start sidecar: service 'db' has no connect-proxy registered on agent http://127.0.0.1:8500",
    );
  });
  test('several name the candidates', () => {
    assert.throws(
      () => selectSidecar(proxies, { serviceId: 'api', tag: undefined }, 'a'),
      (err: unknown) => isHaproxyConnectError(err, 'SIDECAR_AMBIGUOUS') && /'api-blue', 'api-green'/.test(err.message),
    );
  });
});
