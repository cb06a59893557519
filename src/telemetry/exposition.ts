/**
 * The Prometheus text format (0.0.4), written: families with their HELP and TYPE in a fixed order,
 * samples with escaped label values, and cumulative histograms. PURE. The daemon's own metrics
 * (metric-families.ts) and the Envoy-compatible series (envoy-compat.ts) both write through it.
 */

export type Labels = Readonly<Record<string, string>>;
export type FamilyType = 'counter' | 'gauge' | 'histogram';

/** The content type of the text format. */
export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

interface Sample {
  /** The family's name, or for a histogram the name with `_bucket`, `_sum` or `_count`. */
  name: string;
  labels: Labels;
  value: number;
}

interface Family {
  type: FamilyType;
  help: string;
  samples: Sample[];
}

function escapeHelp(help: string): string {
  return help.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

function escapeLabel(value: string): string {
  return value.replaceAll('\\', '\\\\').replaceAll('\n', '\\n').replaceAll('"', '\\"');
}

export function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

export function formatValue(value: number): string {
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return Number.isFinite(value) ? String(value) : 'NaN';
}

/** Observations counted into fixed upper bounds, with their sum and count. */
export class BucketCounts {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(value: number): void {
    for (let i = 0; i < this.bounds.length; i++) if (value <= (this.bounds[i] as number)) (this.counts[i] as number)++;
    this.sum += value;
    this.count++;
  }
}

/** Families in the order they were first added, so the exposition is stable. */
export class Exposition {
  readonly #families = new Map<string, Family>();

  add(name: string, type: FamilyType, help: string, labels: Labels, value: number): void {
    this.#family(name, type, help).samples.push({ name, labels, value });
  }

  /** A histogram's series: one `_bucket` per bound and `+Inf`, then `_sum` and `_count`. */
  addHistogram(name: string, help: string, labels: Labels, buckets: BucketCounts): void {
    const samples = this.#family(name, 'histogram', help).samples;
    buckets.bounds.forEach((le, i) => {
      samples.push({ name: `${name}_bucket`, labels: { ...labels, le: String(le) }, value: buckets.counts[i] as number });
    });
    samples.push({ name: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: buckets.count });
    samples.push({ name: `${name}_sum`, labels, value: buckets.sum });
    samples.push({ name: `${name}_count`, labels, value: buckets.count });
  }

  /** A family with no sample yet still gets its HELP and TYPE lines. */
  declare(name: string, type: FamilyType, help: string): void {
    this.#family(name, type, help);
  }

  text(): string {
    const out: string[] = [];
    for (const [name, family] of this.#families) {
      out.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`);
      for (const sample of family.samples) out.push(`${sample.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
    }
    return out.length === 0 ? '' : `${out.join('\n')}\n`;
  }

  #family(name: string, type: FamilyType, help: string): Family {
    let family = this.#families.get(name);
    if (family === undefined) {
      family = { type, help, samples: [] };
      this.#families.set(name, family);
    }
    return family;
  }
}
