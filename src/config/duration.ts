/**
 * Go's duration syntax (`time.ParseDuration`), as the original tool's and Consul's flags take it:
 * `500ms`, `10s`, `1m30s`, `1.5h`. A bare `0` is zero. Returns milliseconds; PURE.
 */
const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;

/** Milliseconds for a Go duration string, or undefined when it is not one (or negative). */
export function parseGoDuration(raw: string): number | undefined {
  const text = raw.trim();
  if (text === '0') return 0;
  if (text === '') return undefined;
  PART.lastIndex = 0;
  let total = 0;
  while (PART.lastIndex < text.length) {
    const match = PART.exec(text);
    if (match === null) return undefined;
    total += Number(match[1]) * (UNIT_MS[match[2] as string] as number);
  }
  return Number.isFinite(total) ? total : undefined;
}
