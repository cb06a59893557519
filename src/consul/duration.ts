/**
 * Durations in Consul's JSON come in two forms (L7.md finding 3): Go duration strings ("3s",
 * "1.5s", "1m30s", "500ms") and integer nanoseconds (Resolver.RequestTimeout, CookieConfig.TTL).
 * Both parse to milliseconds. PURE.
 */
const UNIT_MS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const GO_DURATION = /^([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)/;

/** Milliseconds of a Go duration string or integer nanoseconds; undefined when it is neither. */
export function parseDurationMs(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value / 1e6 : undefined;
  if (typeof value !== 'string') return undefined;
  let rest = value.trim();
  if (rest === '0') return 0;
  if (/^\d+$/.test(rest)) return Number(rest) / 1e6;
  if (rest === '') return undefined;
  let total = 0;
  while (rest !== '') {
    const m = GO_DURATION.exec(rest);
    if (m === null) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    rest = rest.slice(m[0].length);
  }
  return total;
}
