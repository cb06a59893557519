/** The report's statistics: median and range over the rounds, the seeded bootstrap of a ratio, the "within ±5 %" verdict. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bootstrapRatio, MIN_ROUNDS_FOR_INTERVAL, median, seededRandom, spreadOf, withinVerdict } from '../lib/stats.js';

describe('median and spreadOf', () => {
  test('odd and even counts, in any order', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });
  test('one outlier moves the median by nothing and shows in the range', () => {
    assert.deepEqual(spreadOf([100, 102, 101, 180]), { median: 101.5, min: 100, max: 180, count: 4 });
  });
  test('a round without the figure (NaN) is left out; none at all is NaN with count 0', () => {
    assert.deepEqual(spreadOf([5, Number.NaN, 7]), { median: 6, min: 5, max: 7, count: 2 });
    const none = spreadOf([Number.NaN]);
    assert.equal(none.count, 0);
    assert.ok(Number.isNaN(none.median));
  });
});

describe('seededRandom', () => {
  test('the same seed gives the same sequence, another seed another one, all in [0, 1)', () => {
    const draw = (seed: number): number[] => {
      const random = seededRandom(seed);
      return Array.from({ length: 1_000 }, () => random());
    };
    assert.deepEqual(draw(42), draw(42));
    assert.notDeepEqual(draw(42), draw(43));
    assert.ok(draw(7).every((x) => x >= 0 && x < 1));
  });
  test('roughly uniform: each tenth of [0, 1) gets about a tenth of 10,000 draws', () => {
    const random = seededRandom(1);
    const bins = new Array<number>(10).fill(0);
    for (let i = 0; i < 10_000; i++) {
      const bin = Math.floor(random() * 10);
      bins[bin] = (bins[bin] ?? 0) + 1;
    }
    assert.ok(
      bins.every((n) => n > 900 && n < 1_100),
      bins.join(','),
    );
  });
});

describe('bootstrapRatio', () => {
  const reference = [100, 104, 98, 102];
  test('the ratio of the medians, with an interval around it', () => {
    const r = bootstrapRatio([120, 126, 118, 122], reference);
    assert.equal(r?.ratio, 121 / 101);
    assert.ok(r?.interval !== undefined);
    assert.ok(r.interval.low <= r.ratio && r.ratio <= r.interval.high, JSON.stringify(r));
    // Every resampled median lies within a side's range: the interval cannot leave min/max over max/min.
    assert.ok(r.interval.low >= 118 / 104 && r.interval.high <= 126 / 98, JSON.stringify(r));
  });
  test('reproducible: the same seed gives the same interval, another seed a close one', () => {
    const a = bootstrapRatio([120, 126, 118, 122], reference, { seed: 5 });
    assert.deepEqual(a, bootstrapRatio([120, 126, 118, 122], reference, { seed: 5 }));
    const b = bootstrapRatio([120, 126, 118, 122], reference, { seed: 6 });
    assert.ok(Math.abs((a?.interval?.low ?? 0) - (b?.interval?.low ?? 1)) < 0.01);
  });
  test('identical rounds on both sides: ratio 1 and a zero-width interval', () => {
    assert.deepEqual(bootstrapRatio([50, 50, 50], [50, 50, 50, 50]), { ratio: 1, interval: { low: 1, high: 1 } });
  });
  test('a wider spread gives a wider interval', () => {
    const width = (xs: number[]): number => {
      const i = bootstrapRatio(xs, reference)?.interval;
      return (i?.high ?? 0) - (i?.low ?? 0);
    };
    assert.ok(width([100, 101, 99, 100]) < width([80, 120, 90, 110]));
  });
  test(`below ${MIN_ROUNDS_FOR_INTERVAL} rounds on a side: the ratio, no interval`, () => {
    assert.deepEqual(bootstrapRatio([110, 130], reference), { ratio: 120 / 101, interval: undefined });
    assert.deepEqual(bootstrapRatio([110, 120, 130], [100]), { ratio: 1.2, interval: undefined });
  });
  test('rounds without the figure are left out; none at all is undefined', () => {
    assert.equal(bootstrapRatio([110, Number.NaN], [100])?.ratio, 1.1);
    assert.equal(bootstrapRatio([], reference), undefined);
    assert.equal(bootstrapRatio([Number.NaN], reference), undefined);
  });
});

describe('withinVerdict (±5 %)', () => {
  test('inside, outside, straddling, none', () => {
    assert.equal(withinVerdict({ low: 0.97, high: 1.04 }, 0.05), 'yes');
    assert.equal(withinVerdict({ low: 0.95, high: 1.05 }, 0.05), 'yes');
    assert.equal(withinVerdict({ low: 1.06, high: 1.2 }, 0.05), 'no');
    assert.equal(withinVerdict({ low: 0.8, high: 0.94 }, 0.05), 'no');
    assert.equal(withinVerdict({ low: 1.01, high: 1.08 }, 0.05), 'cannot tell');
    assert.equal(withinVerdict({ low: 0.9, high: 1.1 }, 0.05), 'cannot tell');
    assert.equal(withinVerdict(undefined, 0.05), 'cannot tell');
  });
});
