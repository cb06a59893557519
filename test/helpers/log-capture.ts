/** Captures JSON log lines in memory so tests assert on parsed objects, not strings. */
import { Writable } from 'node:stream';
import { createLogger, type Logger, type LogLevel } from '../../src/logger.js';

export interface CapturedLogs {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
  find(predicate: (line: Record<string, unknown>) => boolean): Record<string, unknown> | undefined;
}

export function captureLogs(level: LogLevel = 'debug'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  const logger = createLogger(level, stream);
  return { logger, lines, find: (p) => lines.find(p) };
}
