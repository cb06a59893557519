import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { findDrift, leafSerial } from '../../src/haproxy/drift.js';
import type { LiveServer } from '../../src/haproxy/runtime-state.js';
import { translate } from '../../src/translate/translate.js';
import { endpoint, snapshot, upstream } from '../helpers/fixtures.js';

const api = upstream('api');
const model = translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1'), endpoint('node-2', '10.0.0.2', 21000, 3)]]] }), { runDir: '/run/hc' }).model;
const backend = model.backends.find((b) => b.tls !== undefined);
assert.ok(backend !== undefined);
const live = (): LiveServer[] =>
  backend.servers.map((s) => ({ backend: backend.name, name: s.name, address: s.address, port: s.port, weight: s.weight, maintenance: false, adminState: 0, opState: 'running' }));
const serial = leafSerial(model);

describe('findDrift', () => {
  test('no drift when HAProxy reports what was applied', () => {
    assert.deepEqual(findDrift(model, live(), serial, new Set()), []);
  });
  const cases: Array<[string, (servers: LiveServer[]) => LiveServer[], RegExp]> = [
    ['a missing server', (s) => s.slice(1), /is missing/],
    ['an extra server', (s) => [...s, { ...(s[0] as LiveServer), name: 'ghost' }], /ghost should not exist/],
    ['a moved server', (s) => [{ ...(s[0] as LiveServer), port: 1 }, ...s.slice(1)], /is at 10\.0\.0\.1:1, not 10\.0\.0\.1:21000/],
    ['a changed weight', (s) => [...s.slice(0, 1), { ...(s[1] as LiveServer), weight: 9 }], /has weight 9, not 3/],
    ['a server in maintenance', (s) => [{ ...(s[0] as LiveServer), maintenance: true }, ...s.slice(1)], /is in maintenance/],
  ];
  for (const [name, mutate, pattern] of cases) {
    test(name, () => {
      const drift = findDrift(model, mutate(live()), serial, new Set());
      assert.equal(drift.length, 1, drift.join('; '));
      assert.match(drift[0] as string, pattern);
    });
  }
  test('a server pending deletion is not drift', () => {
    const extra = { ...(live()[0] as LiveServer), name: 'leaving', maintenance: true };
    assert.deepEqual(findDrift(model, [...live(), extra], serial, new Set([`${backend.name}/leaving`])), []);
  });
  test('another leaf in HAProxy', () => {
    assert.match(findDrift(model, live(), 'ABCDEF', new Set())[0] ?? '', /leaf serial is ABCDEF/);
  });
});
