/**
 * Structured JSON logs on stdout (pino), one child logger per component.
 * Secrets never reach a log line: known secret-bearing keys are redacted as a safety net, but the
 * first rule is not to log them at all.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const REDACT_PATHS = ['token', '*.token', 'privateKeyPem', '*.privateKeyPem', 'headers["x-consul-token"]'];

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { app: 'haproxy-connect' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
