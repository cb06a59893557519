/**
 * A value from Consul as it appears in an error or warning message: strings quoted (cut after 120
 * characters, a control character such as a line break escaped so one message stays one line),
 * everything else as JSON.
 */
export function show(value: unknown): string {
  if (typeof value === 'string') {
    const shown = value.length > 120 ? `${value.slice(0, 120)}...` : value;
    return /[\x00-\x1f\x7f]/.test(shown) ? JSON.stringify(shown) : `'${shown}'`;
  }
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
