/**
 * The statistics of the report over a handful of rounds per figure: median and range (a noisy
 * machine gives a round an outlier now and then, which a mean would carry), and a bootstrap interval
 * for the ratio of two paths' medians. Pure; the bootstrap draws from a seeded PRNG, so the same
 * results always give the same report.
 */

import { prng } from '../../test/helpers/prng.js';

/** Below this many rounds on either side a resampled median takes too few values for an interval to mean anything. */
export const MIN_ROUNDS_FOR_INTERVAL = 3;
/** Resamples per interval: the 2.5 % and 97.5 % points settle to the second decimal of a ratio well before this. */
export const BOOTSTRAP_RESAMPLES = 10_000;
/** Any fixed seed: the point is that the report is reproducible. */
export const BOOTSTRAP_SEED = 20_261_205;

const finite = (xs: readonly number[]): number[] => xs.filter((x) => Number.isFinite(x));

/** The median, the mean of the middle two for an even count; NaN for none. Pure. */
export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const mid = Math.floor(n / 2);
  return n % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** Rounds with a value. */
  count: number;
}

/** Median and range of the rounds' values; a round without the figure (NaN) is left out. Pure. */
export function spreadOf(xs: readonly number[]): Spread {
  const values = finite(xs);
  if (values.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN, count: 0 };
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), count: values.length };
}

/** mulberry32 (the differential tests' generator): uniform in [0, 1); enough for resampling indices. Pure given its seed. */
export const seededRandom: (seed: number) => () => number = prng;

/** The q-quantile (0..1) of sorted values, linear between neighbours. */
function quantileOfSorted(sorted: readonly number[], q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (at - lo);
}

export interface RatioEstimate {
  /** median(values) / median(reference). */
  ratio: number;
  /** Percentile bootstrap interval of the ratio; undefined below MIN_ROUNDS_FOR_INTERVAL rounds on either side. */
  interval: { low: number; high: number } | undefined;
}

export interface BootstrapOptions {
  seed?: number;
  resamples?: number;
  /** Coverage of the interval, 0.95 by default. */
  level?: number;
}

/**
 * The ratio of two paths' medians over their rounds with a percentile bootstrap interval: each
 * path's rounds are resampled with replacement, independently (the paths are two samples, not
 * pairs), the ratio of the resamples' medians taken each time, and the interval is the middle
 * `level` of those ratios. With four rounds a side this is a rough interval (a bootstrap of few
 * values is too narrow rather than too wide), but it tells "within 5 %" from "could be 10 % off".
 * Undefined when either side has no value. Pure.
 */
export function bootstrapRatio(values: readonly number[], reference: readonly number[], options: BootstrapOptions = {}): RatioEstimate | undefined {
  const a = finite(values);
  const b = finite(reference);
  if (a.length === 0 || b.length === 0) return undefined;
  const ratio = median(a) / median(b);
  if (a.length < MIN_ROUNDS_FOR_INTERVAL || b.length < MIN_ROUNDS_FOR_INTERVAL) return { ratio, interval: undefined };
  const random = seededRandom(options.seed ?? BOOTSTRAP_SEED);
  const resamples = options.resamples ?? BOOTSTRAP_RESAMPLES;
  const level = options.level ?? 0.95;
  const resample = (xs: readonly number[]): number[] => xs.map(() => xs[Math.floor(random() * xs.length)] as number);
  const ratios: number[] = [];
  for (let i = 0; i < resamples; i++) ratios.push(median(resample(a)) / median(resample(b)));
  ratios.sort((x, y) => x - y);
  return { ratio, interval: { low: quantileOfSorted(ratios, (1 - level) / 2), high: quantileOfSorted(ratios, 1 - (1 - level) / 2) } };
}

/**
 * What an interval says about "within ±tolerance of the reference": `yes` when the whole interval
 * lies within 1 ± tolerance, `no` when it lies wholly outside, `cannot tell` when it straddles a
 * bound (or there is no interval). Pure.
 */
export function withinVerdict(interval: { low: number; high: number } | undefined, tolerance: number): 'yes' | 'no' | 'cannot tell' {
  if (interval === undefined) return 'cannot tell';
  if (interval.low >= 1 - tolerance && interval.high <= 1 + tolerance) return 'yes';
  if (interval.low > 1 + tolerance || interval.high < 1 - tolerance) return 'no';
  return 'cannot tell';
}
