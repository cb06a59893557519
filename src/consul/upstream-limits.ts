/**
 * An upstream's `limits` and `passive_health_check` from its Config map. Two spellings arrive
 * (measured on a 1.16.2 agent): a registration's own Config keeps what was written
 * (`limits: { max_connections: 3 }`), while service-defaults `UpstreamConfig` merged in by the
 * agent shows the Go field names with durations in nanoseconds (`limits: { MaxConnections: 3 }`,
 * `passive_health_check: { Interval: 2000000000 }`). Consul decodes both with mapstructure
 * (weak typing, case-insensitive names), so keys match here without case or underscores.
 *
 * A bad field does not cost the upstream: like Consul's xDS server, which warns "failed to parse"
 * and carries on, the field falls back to its default and a problem naming the value is returned.
 * PURE.
 */
import { parseDurationMs } from './duration.js';
import { DEFAULT_PASSIVE_HEALTH_CHECK, DEFAULT_UPSTREAM_LIMITS, type PassiveHealthCheck, type UpstreamLimits } from '../domain/upstream-limits.js';
import { show } from './show.js';

/** Envoy's thresholds and counters are uint32. */
const MAX_UINT32 = 4_294_967_295;
const MAX_PERCENT = 100;

export interface UpstreamLimitsSettings {
  /** Present when the Config has a `limits` block. */
  limits?: UpstreamLimits;
  /** Present when the Config has a `passive_health_check` block (even an empty one). */
  passiveHealthCheck?: PassiveHealthCheck;
  /** One per field that fell back to its default: `field` as written in the Config, `reason` names the value. */
  problems: Array<{ field: string; reason: string }>;
}

function normalizeKey(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/** The entry of `map` whose key is `name` without case or underscores (the first such key). */
function lookup(map: Record<string, unknown>, name: string): [string, unknown] | undefined {
  const wanted = normalizeKey(name);
  return Object.entries(map).find(([key]) => normalizeKey(key) === wanted);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type Reader<T> = (value: unknown) => T | string;

/** A whole number in min..max from a JSON number or a numeric string; a string explains why not. */
function wholeNumber(min: number, max: number): Reader<number> {
  return (value) => {
    let n: number;
    if (typeof value === 'number') n = value;
    else if (typeof value === 'string' && /^\s*[+-]?\d+(\.\d+)?\s*$/.test(value)) n = Number(value);
    else return 'is not a number';
    if (!Number.isInteger(n)) return 'is not a whole number';
    if (n < min || n > max) return `is out of range (${min}..${max})`;
    return n;
  };
}

/** A Go duration string ("10s", "1m30s") or integer nanoseconds, as milliseconds. */
const duration: Reader<number> = (value) => {
  const ms = parseDurationMs(value);
  if (ms === undefined) return typeof value === 'number' && value < 0 ? 'is negative' : 'is not a duration (such as "30s", or nanoseconds)';
  return ms;
};

class FieldReader {
  readonly #block: Record<string, unknown>;
  readonly #prefix: string;
  readonly #problems: UpstreamLimitsSettings['problems'];
  constructor(block: Record<string, unknown>, prefix: string, problems: UpstreamLimitsSettings['problems']) {
    this.#block = block;
    this.#prefix = prefix;
    this.#problems = problems;
  }
  /** The field's value, or `fallback` when it is absent (null or '' count as absent) or bad. */
  read<T>(name: string, reader: Reader<T>, fallback: T, describeFallback: string): T {
    const found = lookup(this.#block, name);
    if (found === undefined) return fallback;
    const [key, value] = found;
    if (value === undefined || value === null || value === '') return fallback;
    const result = reader(value);
    if (typeof result !== 'string') return result;
    const field = `${this.#prefix}.${key}`;
    this.#problems.push({ field, reason: `Config.${field} ${show(value)} ${result}; using ${describeFallback}` });
    return fallback;
  }
}

function blockOf(config: Record<string, unknown>, name: string, problems: UpstreamLimitsSettings['problems']): [string, Record<string, unknown>] | undefined {
  const found = lookup(config, name);
  if (found === undefined || found[1] === undefined || found[1] === null) return undefined;
  const [key, value] = found;
  if (isObject(value)) return [key, value];
  problems.push({ field: key, reason: `Config.${key} ${show(value)} is not an object; using the defaults` });
  return [key, {}];
}

function parseLimits(key: string, block: Record<string, unknown>, problems: UpstreamLimitsSettings['problems']): UpstreamLimits {
  const fields = new FieldReader(block, key, problems);
  const count = wholeNumber(0, MAX_UINT32);
  const d = DEFAULT_UPSTREAM_LIMITS;
  return {
    maxConnections: fields.read('max_connections', count, d.maxConnections, `the default ${d.maxConnections}`),
    maxPendingRequests: fields.read('max_pending_requests', count, d.maxPendingRequests, `the default ${d.maxPendingRequests}`),
    maxConcurrentRequests: fields.read('max_concurrent_requests', count, d.maxConcurrentRequests, `the default ${d.maxConcurrentRequests}`),
  };
}

function parsePassiveHealthCheck(key: string, block: Record<string, unknown>, problems: UpstreamLimitsSettings['problems']): PassiveHealthCheck {
  const fields = new FieldReader(block, key, problems);
  const d = DEFAULT_PASSIVE_HEALTH_CHECK;
  const percent = wholeNumber(0, MAX_PERCENT);
  // Consul sends Interval and MaxFailures only when non-zero (ToOutlierDetection): 0 means Envoy's default.
  const intervalMs = fields.read('interval', duration, d.intervalMs, `the default ${d.intervalMs / 1000}s`);
  const maxFailures = fields.read('max_failures', wholeNumber(0, MAX_UINT32), d.maxFailures, `the default ${d.maxFailures}`);
  return {
    intervalMs: intervalMs === 0 ? d.intervalMs : intervalMs,
    maxFailures: maxFailures === 0 ? d.maxFailures : maxFailures,
    enforcingConsecutive5xx: fields.read('enforcing_consecutive_5xx', percent, d.enforcingConsecutive5xx, `the default ${d.enforcingConsecutive5xx}`),
    maxEjectionPercent: fields.read('max_ejection_percent', percent, d.maxEjectionPercent, `the default ${d.maxEjectionPercent}`),
    baseEjectionTimeMs: fields.read('base_ejection_time', duration, d.baseEjectionTimeMs, `the default ${d.baseEjectionTimeMs / 1000}s`),
  };
}

/** The `limits` and `passive_health_check` of an upstream's Config, with bad fields at their defaults. */
export function parseUpstreamLimits(config: Record<string, unknown>): UpstreamLimitsSettings {
  const problems: UpstreamLimitsSettings['problems'] = [];
  const limits = blockOf(config, 'limits', problems);
  const passive = blockOf(config, 'passive_health_check', problems);
  return {
    ...(limits !== undefined && { limits: parseLimits(limits[0], limits[1], problems) }),
    ...(passive !== undefined && { passiveHealthCheck: parsePassiveHealthCheck(passive[0], passive[1], problems) }),
    problems,
  };
}
