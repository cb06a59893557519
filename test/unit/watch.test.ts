import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Cursor, Versioned } from '../../src/consul/api.js';
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, MIN_BLOCKING_INTERVAL_MS, abortableDelay, backoffMs, runWatch } from '../../src/consul/watch.js';
import { waitFor } from '../../devtools/ports.js';

const DEADLINE_MS = 2000;

const until = (what: string, predicate: () => boolean): Promise<true> => waitFor(what, async () => (predicate() ? true : undefined), DEADLINE_MS, 2);

type Step<T> = Versioned<T> | Error;

/** A fetch that plays `steps` in order, then blocks until its signal aborts. */
function scripted<T>(steps: Array<Step<T>>) {
  const cursors: Cursor[] = [];
  const signals: AbortSignal[] = [];
  let i = 0;
  const fetch = (cursor: Cursor, signal: AbortSignal): Promise<Versioned<T>> => {
    cursors.push({ ...cursor });
    signals.push(signal);
    const step = steps[i++];
    if (step === undefined) {
      return new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      });
    }
    return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
  };
  return {
    fetch,
    cursors,
    signals,
    get exhausted() {
      return i > steps.length;
    },
  };
}

function harness<T>(steps: Array<Step<T>>, extra: { random?: () => number; pollIntervalMs?: number } = {}) {
  const source = scripted(steps);
  const values: T[] = [];
  const errors: Array<{ message: string; attempt: number }> = [];
  const delays: number[] = [];
  const controller = new AbortController();
  const done = runWatch<T>({
    name: 'test',
    fetch: source.fetch,
    onValue: (v) => values.push(v),
    onError: (err, attempt) => errors.push({ message: err.message, attempt }),
    signal: controller.signal,
    delay: async (ms) => {
      delays.push(ms);
    },
    ...(extra.random !== undefined && { random: extra.random }),
    ...(extra.pollIntervalMs !== undefined && { pollIntervalMs: extra.pollIntervalMs }),
  });
  /** Waits until every scripted step ran and the watcher blocks in the next fetch, then stops it. */
  const finish = async (): Promise<void> => {
    await until('script to be consumed', () => source.exhausted);
    controller.abort();
    await done;
  };
  return { source, values, errors, delays, controller, done, finish };
}

const v = <T>(value: T, cursor: Cursor): Versioned<T> => ({ value, cursor });

describe('runWatch', () => {
  test('a consumer that throws is reported and the watch goes on (no rejection, no unhandled error)', async () => {
    const source = scripted([v(1, { index: 2 }), v(2, { index: 3 }), v(3, { index: 4 })]);
    const values: number[] = [];
    const consumerErrors: string[] = [];
    const controller = new AbortController();
    const done = runWatch<number>({
      name: 'test',
      fetch: source.fetch,
      onValue: (value) => {
        if (value === 2) throw new Error('consumer bug');
        values.push(value);
      },
      onError: () => assert.fail('a consumer error is not a fetch error'),
      onValueError: (err) => consumerErrors.push(err.message),
      signal: controller.signal,
      delay: async () => {},
    });
    await until('script to be consumed', () => source.exhausted);
    controller.abort();
    await done;
    assert.deepEqual(values, [1, 3]);
    assert.deepEqual(consumerErrors, ['consumer bug']);
  });

  test('without onValueError a throwing consumer goes to onError with attempt 0', async () => {
    const source = scripted([v(1, { index: 2 })]);
    const errors: Array<[string, number]> = [];
    const controller = new AbortController();
    const done = runWatch<number>({
      name: 'test',
      fetch: source.fetch,
      signal: controller.signal,
      delay: async () => {},
      onValue: () => {
        throw new Error('boom');
      },
      onError: (err, attempt) => errors.push([err.message, attempt]),
    });
    await until('script to be consumed', () => source.exhausted);
    controller.abort();
    await done;
    assert.deepEqual(errors, [['boom', 0]]);
  });

  test('delivers the first value and only real changes; passes the cursor back', async () => {
    const h = harness([
      v({ a: 1 }, { index: 5 }),
      v({ a: 1 }, { index: 5 }), // same index: no change (wait time ran out)
      v({ a: 1 }, { index: 7 }), // new index, equal data: no change
      v({ a: 2 }, { index: 9 }),
    ]);
    await h.finish();
    assert.deepEqual(h.values, [{ a: 1 }, { a: 2 }]);
    assert.deepEqual(h.source.cursors, [{}, { index: 5 }, { index: 5 }, { index: 7 }, { index: 9 }]);
    // A return that did not move the cursor is rate limited; a moved index with equal data
    // blocked legitimately and is followed at once.
    assert.deepEqual(h.delays, [MIN_BLOCKING_INTERVAL_MS]);
  });

  test('an index that goes backwards resets the cursor to 0 and is not delivered', async () => {
    const h = harness([v('a', { index: 10 }), v('stale', { index: 3 }), v('b', { index: 4 })]);
    await h.finish();
    assert.deepEqual(h.values, ['a', 'b']);
    assert.deepEqual(h.source.cursors, [{}, { index: 10 }, { index: 0 }, { index: 4 }]);
  });

  test('index 0 from the server becomes 1 so the next request blocks', async () => {
    const h = harness([v('a', { index: 0 })]);
    await h.finish();
    assert.deepEqual(h.values, ['a']);
    assert.deepEqual(h.source.cursors, [{}, { index: 1 }]);
  });

  test('hash cursors: the same hash is no change', async () => {
    const h = harness([v('a', { hash: 'h1' }), v('a2', { hash: 'h1' }), v('b', { hash: 'h2' })]);
    await h.finish();
    assert.deepEqual(h.values, ['a', 'b']);
    assert.deepEqual(h.source.cursors, [{}, { hash: 'h1' }, { hash: 'h1' }, { hash: 'h2' }]);
  });

  test('custom equality', async () => {
    const source = scripted([v({ id: 1, t: 1 }, { index: 1 }), v({ id: 1, t: 2 }, { index: 2 })]);
    const values: unknown[] = [];
    const controller = new AbortController();
    const done = runWatch({
      name: 'eq',
      fetch: source.fetch,
      onValue: (x) => values.push(x),
      onError: () => undefined,
      signal: controller.signal,
      equals: (a, b) => a.id === b.id,
      delay: async () => undefined,
    });
    await until('script', () => source.exhausted);
    controller.abort();
    await done;
    assert.equal(values.length, 1);
  });

  test('errors back off exponentially with full jitter up to the cap, keeping the cursor', async () => {
    const errs = Array.from({ length: 10 }, (_, i) => new Error(`boom ${i + 1}`));
    const h = harness<string>([v('a', { index: 5 }), ...errs, v('b', { index: 6 }), new Error('again')], {
      random: () => 0.5,
    });
    await h.finish();
    assert.deepEqual(h.values, ['a', 'b']);
    assert.deepEqual(
      h.errors.map((e) => e.attempt),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1], // a success resets the attempts
    );
    assert.equal(h.errors[0]?.message, 'boom 1');
    const expected = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => Math.floor(0.5 * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (n - 1))));
    assert.deepEqual(h.delays.slice(0, 10), expected);
    assert.equal(h.delays[9], BACKOFF_MAX_MS / 2); // capped
    assert.equal(h.delays[10], Math.floor(0.5 * BACKOFF_BASE_MS));
    // The cursor survives errors.
    assert.ok(h.source.cursors.slice(1, 12).every((c) => c.index === 5));
    assert.deepEqual(h.source.cursors.at(-1), { index: 6 });
  });

  test('backoffMs: bounds', () => {
    assert.equal(
      backoffMs(1, () => 0),
      0,
    );
    assert.equal(
      backoffMs(1, () => 0.999999),
      BACKOFF_BASE_MS - 1,
    );
    assert.equal(
      backoffMs(1000, () => 0.999999),
      BACKOFF_MAX_MS - 1,
    );
    assert.ok(Number.isFinite(backoffMs(Number.MAX_SAFE_INTEGER, () => 1)));
  });

  test('polled sources: the poll interval separates fetches and equal data is suppressed', async () => {
    const h = harness([v(['x'], {}), v(['x'], {}), v(['y'], {})], { pollIntervalMs: 10_000 });
    await h.finish();
    assert.deepEqual(h.values, [['x'], ['y']]);
    assert.deepEqual(h.delays, [10_000, 10_000, 10_000]);
  });

  test('abort while blocked in fetch: resolves promptly and aborts the in-flight request', async () => {
    const h = harness([v('a', { index: 1 })]);
    await until('blocked fetch', () => h.source.signals.length === 2);
    h.controller.abort();
    await h.done;
    assert.equal(h.source.signals[1]?.aborted, true);
    assert.deepEqual(h.errors, []); // an abort is not an error
  });

  test('abort while backing off (real timers): resolves promptly', async () => {
    const source = scripted<string>([new Error('down')]);
    const controller = new AbortController();
    const errors: number[] = [];
    const started = Date.now();
    const done = runWatch({
      name: 'backoff',
      fetch: source.fetch,
      onValue: () => undefined,
      onError: (_e, attempt) => errors.push(attempt),
      signal: controller.signal,
      random: () => 0.99,
      backoff: { baseMs: 600_000, maxMs: 600_000 },
    });
    await until('first error', () => errors.length === 1);
    controller.abort();
    await done;
    assert.ok(Date.now() - started < DEADLINE_MS);
    assert.equal(source.cursors.length, 1);
  });

  test('an injected delay that rejects on abort also ends the loop', async () => {
    const source = scripted<string>([new Error('down')]);
    const controller = new AbortController();
    const done = runWatch({
      name: 'reject',
      fetch: source.fetch,
      onValue: () => undefined,
      onError: () => undefined,
      signal: controller.signal,
      delay: (_ms, signal) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true })),
    });
    await until('fetch', () => source.cursors.length === 1);
    controller.abort();
    await done;
  });

  test('an already aborted signal never fetches', async () => {
    const source = scripted<string>([v('a', { index: 1 })]);
    await runWatch({
      name: 'pre',
      fetch: source.fetch,
      onValue: () => undefined,
      onError: () => undefined,
      signal: AbortSignal.abort(),
    });
    assert.equal(source.cursors.length, 0);
  });

  test('abortableDelay resolves on abort and on time', async () => {
    const c = new AbortController();
    const p = abortableDelay(600_000, c.signal);
    c.abort();
    await p;
    await abortableDelay(1, new AbortController().signal);
  });
});
