/**
 * Structured logs on stdout, one child logger per component: one JSON object per line by default,
 * or one readable text line per entry (`-log-format text`). The JSON line is pino's: `level` as a
 * label, an ISO `time`, `app`, the child's bindings, the call's fields, `msg`; every key once (the
 * most specific value wins). Written synchronously, so a line is never lost at exit.
 * Secrets never reach a log line: known secret-bearing keys are redacted as a safety net, but the
 * first rule is not to log them at all. Redaction runs before either format is written.
 */
import { writeSync } from 'node:fs';

/** Where lines go: a Writable, or anything with a `write(line)`. */
export interface DestinationStream {
  write(chunk: string): unknown;
}

type LogFn = {
  (msg: string): void;
  (fields: Record<string, unknown>, msg?: string): void;
};

export interface Logger {
  readonly level: LogLevel | 'silent';
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  isLevelEnabled(level: string): boolean;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Redacted wherever they appear at the top of a line or one object down (`headers` included). */
const REDACTED_KEYS: ReadonlySet<string> = new Set(['token', 'privateKeyPem', 'x-consul-token']);
const CENSOR = '[redacted]';
/** pino's numbers, which order the levels. */
const LEVEL_VALUES: Readonly<Record<string, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Number.POSITIVE_INFINITY };

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

/** A value as the JSON line would carry it: JSON's numbers (non-finite ones are null), a BigInt or a cycle as its string form. */
function textValue(value: unknown): string {
  if (typeof value === 'string') return BARE_VALUE.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : 'null';
  if (typeof value === 'boolean' || value === null) return String(value);
  if (typeof value === 'bigint') return value.toString();
  try {
    const json = JSON.stringify(value);
    // An object whose toJSON gives a primitive (a Date) is written as that primitive.
    if (json !== undefined) return json.startsWith('{') || json.startsWith('[') ? json : textValue(JSON.parse(json));
  } catch {
    // below
  }
  return textValue(String(value));
}

/**
 * One JSON log line → `time LEVEL component: msg key=value ...`. PURE. A line that is not a JSON
 * object is returned unchanged (it cannot come from the logger, but must never be lost).
 */
export function formatTextLine(jsonLine: string): string {
  let entry: unknown;
  try {
    entry = JSON.parse(jsonLine);
  } catch {
    return jsonLine.trimEnd();
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return jsonLine.trimEnd();
  return formatTextEntry(entry as Record<string, unknown>);
}

/** One log entry (the object the JSON line is written from) → `time LEVEL component: msg key=value ...`. PURE. */
export function formatTextEntry(fields: Record<string, unknown>): string {
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

/** A copy of `entry` with secret-bearing keys censored, at the top level and one object down. */
function redact(entry: Record<string, unknown>): Record<string, unknown> {
  // No prototype: a field named `__proto__` is a key like any other, not the copy's prototype.
  const out: Record<string, unknown> = Object.create(null);
  for (const [key, value] of Object.entries(entry)) {
    if (REDACTED_KEYS.has(key)) out[key] = CENSOR;
    else if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).some((k) => REDACTED_KEYS.has(k))) {
      out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, REDACTED_KEYS.has(k) ? CENSOR : v]));
    } else out[key] = value;
  }
  return out;
}

/** An Error under `err` is written as pino writes it: type, message, stack. */
function errorFields(value: unknown): unknown {
  return value instanceof Error ? { type: value.name, message: value.message, stack: value.stack } : value;
}

/** One line of JSON; a value JSON cannot write (a BigInt, a cycle) is written as its string form. */
function stringify(entry: Record<string, unknown>): string {
  try {
    return JSON.stringify(entry);
  } catch {
    return JSON.stringify(Object.fromEntries(Object.entries(entry).map(([k, v]) => [k, typeof v === 'object' && v !== null ? String(v) : typeof v === 'bigint' ? v.toString() : v])));
  }
}

class LineLogger implements Logger {
  readonly level: LogLevel | 'silent';
  readonly #threshold: number;
  readonly #bindings: Record<string, unknown>;
  readonly #write: (entry: Record<string, unknown>) => void;

  constructor(level: LogLevel | 'silent', bindings: Record<string, unknown>, write: (entry: Record<string, unknown>) => void) {
    this.level = level;
    this.#threshold = LEVEL_VALUES[level] ?? 30;
    this.#bindings = bindings;
    this.#write = write;
  }

  readonly trace: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('trace', a, msg);
  readonly debug: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('debug', a, msg);
  readonly info: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('info', a, msg);
  readonly warn: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('warn', a, msg);
  readonly error: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('error', a, msg);
  readonly fatal: LogFn = (a: Record<string, unknown> | string, msg?: string) => this.#log('fatal', a, msg);

  child(bindings: Record<string, unknown>): Logger {
    return new LineLogger(this.level, { ...this.#bindings, ...bindings }, this.#write);
  }

  isLevelEnabled(level: string): boolean {
    return (LEVEL_VALUES[level] ?? Number.POSITIVE_INFINITY) >= this.#threshold;
  }

  #log(level: LogLevel | 'fatal', a: Record<string, unknown> | string, msg: string | undefined): void {
    if ((LEVEL_VALUES[level] as number) < this.#threshold) return;
    const fields = typeof a === 'string' ? {} : a;
    const text = typeof a === 'string' ? a : msg;
    const entry: Record<string, unknown> = { level, time: new Date().toISOString(), ...this.#bindings, ...fields };
    if ('err' in fields) entry['err'] = errorFields(fields['err']);
    // `msg` last, as pino writes it; a field named msg gives way to the message.
    delete entry['msg'];
    if (text !== undefined) entry['msg'] = text;
    else if (typeof fields['msg'] === 'string') entry['msg'] = fields['msg'];
    this.#write(redact(entry));
  }
}

/** Every line to stdout, synchronously (EAGAIN on a non-blocking pipe is retried). */
function stdoutWrite(line: string): void {
  const data = Buffer.from(line);
  for (let offset = 0; offset < data.length; ) {
    try {
      offset += writeSync(1, data, offset);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'EAGAIN') return;
    }
  }
}

export function createLogger(level: LogLevel, destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const write = destination === undefined ? stdoutWrite : (line: string): unknown => destination.write(line);
  const toLine = format === 'text' ? (entry: Record<string, unknown>): string => `${formatTextEntry(entry)}\n` : (entry: Record<string, unknown>): string => `${stringify(entry)}\n`;
  return new LineLogger(level, { app: 'haproxy-connect' }, (entry) => void write(toLine(entry)));
}

/** A logger that writes nothing (for parts built without one, e.g. in tests). */
export function silentLogger(): Logger {
  return new LineLogger('silent', {}, () => undefined);
}
