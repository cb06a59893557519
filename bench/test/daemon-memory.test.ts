import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { caEverySecondsOf, churnSecondsOf } from '../control-plane/daemon-memory.js';

describe('daemon-memory settings', () => {
  test('churn: 60 s full, 20 s quick, BENCH_CHURN_S whole seconds of at least 10', () => {
    assert.equal(churnSecondsOf('full', undefined), 60);
    assert.equal(churnSecondsOf('quick', ''), 20);
    assert.equal(churnSecondsOf('quick', '3600'), 3600);
    assert.throws(() => churnSecondsOf('full', '9'), /BENCH_CHURN_S=9: whole seconds, at least 10/);
    assert.throws(() => churnSecondsOf('full', '1.5'), /BENCH_CHURN_S=1\.5/);
  });
  test('rotations: every 120 s, BENCH_CA_EVERY_S 0 for none or at least 30', () => {
    assert.equal(caEverySecondsOf(undefined), 120);
    assert.equal(caEverySecondsOf(''), 120);
    assert.equal(caEverySecondsOf('0'), 0);
    assert.equal(caEverySecondsOf('600'), 600);
    assert.throws(() => caEverySecondsOf('10'), /BENCH_CA_EVERY_S=10: whole seconds, 0 \(no rotation\) or at least 30/);
    assert.throws(() => caEverySecondsOf('x'), /BENCH_CA_EVERY_S=x/);
  });
});
