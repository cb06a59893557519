/**
 * Counters, gauges and histograms with labels, and the registry that writes them: what the
 * daemon's own metrics need of a Prometheus client, and nothing else (no default metrics, no
 * global registry). A family without label names always has its one series (0 until set), as
 * Prometheus clients do; a family with label names has the series it was given.
 */
import { BucketCounts, EXPOSITION_CONTENT_TYPE, Exposition, type Labels } from './exposition.js';

interface FamilyOptions<F> {
  name: string;
  help: string;
  labelNames?: readonly string[];
  /** Called at every scrape before the family is written: sets the values of a state. */
  collect?: (family: F) => void;
}

/** Series are keyed by their label values in the family's label order. */
function seriesKey(labelNames: readonly string[], labels: Labels): string {
  return JSON.stringify(labelNames.map((n) => labels[n] ?? ''));
}

abstract class Family<F> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly #collect: ((family: F) => void) | undefined;

  constructor(options: FamilyOptions<F>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames ?? [];
    this.#collect = options.collect;
  }

  /** The labels as the family declares them (in its order); throws on a name it does not have. */
  protected labels(given: Labels): Labels {
    for (const key of Object.keys(given)) if (!this.labelNames.includes(key)) throw new Error(`metric ${this.name} has no label ${key}`);
    return Object.fromEntries(this.labelNames.map((n) => [n, given[n] ?? '']));
  }

  write(out: Exposition): void {
    this.#collect?.(this as unknown as F);
    this.writeSeries(out);
  }

  protected abstract writeSeries(out: Exposition): void;
}

/** A counter or a gauge: one number per series. */
abstract class ValueFamily<F> extends Family<F> {
  readonly #values = new Map<string, { labels: Labels; value: number }>();
  protected abstract readonly type: 'counter' | 'gauge';

  protected add(labels: Labels, by: number): void {
    const key = seriesKey(this.labelNames, labels);
    const series = this.#values.get(key);
    if (series === undefined) this.#values.set(key, { labels: this.labels(labels), value: by });
    else series.value += by;
  }

  protected put(labels: Labels, value: number): void {
    this.#values.set(seriesKey(this.labelNames, labels), { labels: this.labels(labels), value });
  }

  /** Forgets every series (a collect that sets them all again). */
  reset(): void {
    this.#values.clear();
  }

  protected writeSeries(out: Exposition): void {
    if (this.labelNames.length === 0 && this.#values.size === 0) out.add(this.name, this.type, this.help, {}, 0);
    else if (this.#values.size === 0) out.declare(this.name, this.type, this.help);
    for (const { labels, value } of this.#values.values()) out.add(this.name, this.type, this.help, labels, value);
  }
}

export class Counter extends ValueFamily<Counter> {
  protected readonly type = 'counter';

  /** Adds `by` (default 1; 0 creates the series). */
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} cannot go down (${by})`);
    this.add(labels, by);
  }
}

export class Gauge extends ValueFamily<Gauge> {
  protected readonly type = 'gauge';

  set(labels: Labels, value: number): void {
    this.put(labels, value);
  }
}

export class Histogram extends Family<Histogram> {
  readonly #bounds: readonly number[];
  readonly #series = new Map<string, { labels: Labels; buckets: BucketCounts }>();

  constructor(options: FamilyOptions<Histogram> & { buckets: readonly number[] }) {
    super(options);
    this.#bounds = [...options.buckets].sort((a, b) => a - b);
  }

  observe(labels: Labels, value: number): void {
    this.#buckets(labels).observe(value);
  }

  /** Creates the series at zero, so it exists before the first observation. */
  zero(labels: Labels): void {
    this.#buckets(labels);
  }

  protected writeSeries(out: Exposition): void {
    if (this.labelNames.length === 0) this.#buckets({});
    if (this.#series.size === 0) out.declare(this.name, 'histogram', this.help);
    for (const { labels, buckets } of this.#series.values()) out.addHistogram(this.name, this.help, labels, buckets);
  }

  #buckets(labels: Labels): BucketCounts {
    const key = seriesKey(this.labelNames, labels);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { labels: this.labels(labels), buckets: new BucketCounts(this.#bounds) };
      this.#series.set(key, series);
    }
    return series.buckets;
  }
}

/** The families of one run, written in the order they were registered. */
export class Registry {
  readonly contentType = EXPOSITION_CONTENT_TYPE;
  readonly #families: Array<{ write(out: Exposition): void }> = [];

  counter(options: FamilyOptions<Counter>): Counter {
    return this.#register(new Counter(options));
  }

  gauge(options: FamilyOptions<Gauge>): Gauge {
    return this.#register(new Gauge(options));
  }

  histogram(options: FamilyOptions<Histogram> & { buckets: readonly number[] }): Histogram {
    return this.#register(new Histogram(options));
  }

  text(): string {
    const out = new Exposition();
    for (const family of this.#families) family.write(out);
    return out.text();
  }

  #register<F extends { write(out: Exposition): void }>(family: F): F {
    this.#families.push(family);
    return family;
  }
}
