/** The restart policy for an HAProxy master that died on its own. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RestartBackoff, STABLE_RUN_MS } from '../../src/reconcile/restart-backoff.js';

test('at once after a stable run; crashes in a row back off, doubling up to the cap; a stable run starts over', () => {
  const backoff = new RestartBackoff({ baseMs: 500, maxMs: 3_000 });
  assert.equal(backoff.next(STABLE_RUN_MS), 0);
  assert.deepEqual(
    [1, 2, 3, 4, 5].map(() => backoff.next(1_000)),
    [500, 1_000, 2_000, 3_000, 3_000],
  );
  assert.equal(backoff.attempts, 6);
  assert.equal(backoff.next(STABLE_RUN_MS + 1), 0);
  assert.equal(backoff.next(10), 500);
});

test('a first crash soon after the start also restarts at once', () => {
  assert.equal(new RestartBackoff().next(5), 0);
});
