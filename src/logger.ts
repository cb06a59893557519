/**
 * Structured logs on stdout (pino), one child logger per component: one JSON object per line by
 * default, or one readable text line per entry (`-log-format text`).
 * Secrets never reach a log line: known secret-bearing keys are redacted as a safety net, but the
 * first rule is not to log them at all. Redaction runs before either format is written.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

const REDACT_PATHS = ['token', '*.token', 'privateKeyPem', '*.privateKeyPem', 'headers["x-consul-token"]'];

/** Keys the text format shows in its fixed columns, or drops as noise (`app` is on every line). */
const TEXT_FIXED_KEYS: ReadonlySet<string> = new Set(['time', 'level', 'msg', 'component', 'app']);
/** Width of the level column: `DEBUG`, `ERROR` and `FATAL` are the longest labels. */
const LEVEL_COLUMN_WIDTH = 5;
/** A text value is written bare only when it cannot be misread: no spaces, quotes, `=` or controls. */
const BARE_VALUE = /^[^\s"=\\\u0000-\u001f\u007f]+$/;
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/g;

/** Control characters (newlines included) as JSON-style escapes: one entry stays one line. */
function escapeControls(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => JSON.stringify(c).slice(1, -1));
}

function textValue(value: unknown): string {
  if (typeof value === 'string') return BARE_VALUE.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value) ?? String(value);
}

/**
 * One pino JSON line → `time LEVEL component: msg key=value ...`. PURE. A line that is not a JSON
 * object is returned unchanged (it cannot come from pino, but must never be lost).
 */
export function formatTextLine(jsonLine: string): string {
  let entry: unknown;
  try {
    entry = JSON.parse(jsonLine);
  } catch {
    return jsonLine.trimEnd();
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return jsonLine.trimEnd();
  const fields = entry as Record<string, unknown>;
  const parts: string[] = [];
  if (fields['time'] !== undefined) parts.push(String(fields['time']));
  parts.push(
    String(fields['level'] ?? 'info')
      .toUpperCase()
      .padEnd(LEVEL_COLUMN_WIDTH),
  );
  const component = fields['component'];
  const msg = typeof fields['msg'] === 'string' ? escapeControls(fields['msg']) : '';
  parts.push(component === undefined ? msg : `${escapeControls(String(component))}: ${msg}`);
  for (const [key, value] of Object.entries(fields)) {
    if (TEXT_FIXED_KEYS.has(key) || value === undefined) continue;
    parts.push(`${escapeControls(key)}=${textValue(value)}`);
  }
  return parts.join(' ');
}

/** Wraps a destination so every pino line reaches it as one text line. */
export function textDestination(destination: DestinationStream): DestinationStream {
  return {
    write(chunk: string): void {
      const lines = chunk.split('\n').filter((line) => line !== '');
      destination.write(lines.map((line) => `${formatTextLine(line)}\n`).join(''));
    },
  };
}

/**
 * One pino line with every key once. pino writes a child's bindings and the call's fields side by
 * side, so `logger.child({ component: 'haproxy' }).info({ component: 'x' })` would print the key
 * twice, which many log pipelines reject. The last value (the most specific) wins, as in JSON.parse.
 * A line that is not a JSON object is returned unchanged.
 */
export function uniqueKeysLine(jsonLine: string): string {
  let entry: unknown;
  try {
    entry = JSON.parse(jsonLine);
  } catch {
    return jsonLine;
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return jsonLine;
  return JSON.stringify(entry);
}

/** Wraps a destination so every pino line reaches it with unique keys. */
export function uniqueKeysDestination(destination: DestinationStream): DestinationStream {
  return {
    write(chunk: string): void {
      const lines = chunk.split('\n').filter((line) => line !== '');
      destination.write(lines.map((line) => `${uniqueKeysLine(line)}\n`).join(''));
    },
  };
}

export function createLogger(level: LogLevel, destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const sink = destination ?? pino.destination({ fd: 1, sync: true });
  return pino(
    {
      level,
      base: { app: 'haproxy-connect' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    // The text format parses each line too, which keeps one value per key the same way.
    format === 'text' ? textDestination(sink) : uniqueKeysDestination(sink),
  );
}

/** A logger that writes nothing (for parts built without one, e.g. in tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
