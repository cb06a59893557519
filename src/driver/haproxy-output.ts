/**
 * HAProxy's stdout and stderr: each line logged at the level its prefix says, and the last lines
 * kept so a failed start or reload can quote them.
 */

/** The subset of the logger this module uses (src/logger.ts' Logger satisfies it). */
export interface ProcessLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Server and proxy events: they also arrive through the log ring (src/telemetry/haproxy-logs.ts) as structured lines. */
const RING_LOGGED_EVENT = /^\[(?:WARNING|ALERT|NOTICE)\]\s+\(\d+\) : (?:Server |Proxy |Stopping (?:proxy|backend|frontend) |backend .* has no server available)/;
/** Lines kept for error messages. */
const TAIL_LINES = 50;

export class HaproxyOutput {
  readonly #log: ProcessLogger;
  readonly #tail: Array<{ seq: number; line: string }> = [];
  #seq = 0;

  constructor(log: ProcessLogger) {
    this.#log = log;
  }

  /** A mark to read the lines after it with `since`. */
  get mark(): number {
    return this.#seq;
  }

  line(pid: number, stream: 'stdout' | 'stderr', line: string): void {
    this.#seq += 1;
    this.#tail.push({ seq: this.#seq, line });
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    const fields = { component: 'haproxy', pid, stream };
    // The ring's copy of an event is the one logged at its level; this one is kept for error messages.
    if (RING_LOGGED_EVENT.test(line)) this.#log.debug(fields, line);
    else if (line.startsWith('[ALERT]')) this.#log.error(fields, line);
    else if (line.startsWith('[WARNING]')) this.#log.warn(fields, line);
    else this.#log.info(fields, line);
  }

  /** The kept lines written after `mark`. */
  since(mark: number): string[] {
    return this.#tail.filter((t) => t.seq > mark).map((t) => t.line);
  }
}
