/**
 * Syslog as HAProxy's log ring sends it to the daemon: octet-counted frames (RFC 6587 3.4.1,
 * `<length> <message>`) over a unix stream socket, each message in RFC 5424 form
 * (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`). PURE: bytes in, frames or typed errors out.
 *
 * Bounded: a length of more than MAX_LENGTH_DIGITS digits is a framing error; a frame longer
 * than the decoder's limit is skipped without being buffered (reported once as `oversize`).
 */

export const MAX_LENGTH_DIGITS = 7;

export type SyslogErrorKind = 'framing' | 'oversize' | 'syslog';

export type DecodedItem = { kind: 'frame'; text: string } | { kind: 'error'; error: SyslogErrorKind; detail: string };

const SPACE = 0x20;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/**
 * Streaming octet-count decoder. After a `framing` error the stream cannot be re-synchronised:
 * the caller drops the connection (HAProxy reconnects) and every later push returns nothing.
 */
export class OctetCountingDecoder {
  readonly #maxFrameBytes: number;
  #state: 'length' | 'body' | 'skip' | 'broken' = 'length';
  #digits = '';
  #expected = 0;
  #chunks: Buffer[] = [];
  #received = 0;
  readonly #decoder = new TextDecoder('utf-8', { fatal: false });

  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  get broken(): boolean {
    return this.#state === 'broken';
  }

  push(chunk: Buffer): DecodedItem[] {
    const out: DecodedItem[] = [];
    let offset = 0;
    while (offset < chunk.length && this.#state !== 'broken') {
      if (this.#state === 'length') {
        offset = this.#readLength(chunk, offset, out);
      } else if (this.#state === 'skip') {
        const take = Math.min(this.#expected - this.#received, chunk.length - offset);
        this.#received += take;
        offset += take;
        if (this.#received === this.#expected) this.#reset();
      } else {
        const take = Math.min(this.#expected - this.#received, chunk.length - offset);
        this.#chunks.push(chunk.subarray(offset, offset + take));
        this.#received += take;
        offset += take;
        if (this.#received === this.#expected) {
          const body = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
          out.push({ kind: 'frame', text: this.#decoder.decode(body) });
          this.#reset();
        }
      }
    }
    return out;
  }

  #readLength(chunk: Buffer, start: number, out: DecodedItem[]): number {
    let offset = start;
    while (offset < chunk.length) {
      const byte = chunk[offset] as number;
      offset++;
      if (byte === SPACE && this.#digits !== '') {
        this.#expected = Number(this.#digits);
        this.#received = 0;
        if (this.#expected > this.#maxFrameBytes) {
          out.push({ kind: 'error', error: 'oversize', detail: `a ${this.#expected}-byte frame exceeds ${this.#maxFrameBytes} bytes` });
          this.#state = 'skip';
        } else {
          this.#state = 'body';
        }
        return offset;
      }
      const digit = byte >= DIGIT_0 && byte <= DIGIT_9;
      // RFC 6587: the length has no leading zero and is at least 1.
      if (!digit || (this.#digits === '' && byte === DIGIT_0) || this.#digits.length >= MAX_LENGTH_DIGITS) {
        out.push({ kind: 'error', error: 'framing', detail: `byte 0x${byte.toString(16).padStart(2, '0')} where a frame length was expected` });
        this.#state = 'broken';
        return chunk.length;
      }
      this.#digits += String.fromCharCode(byte);
    }
    return offset;
  }

  #reset(): void {
    this.#state = 'length';
    this.#digits = '';
    this.#expected = 0;
    this.#received = 0;
    this.#chunks = [];
  }
}

export const SYSLOG_SEVERITIES = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'] as const;
export type SyslogSeverity = (typeof SYSLOG_SEVERITIES)[number];

export interface SyslogMessage {
  facility: number;
  severity: SyslogSeverity;
  /** RFC 3339 timestamp as sent, or undefined for `-`. */
  timestamp: string | undefined;
  /** PROCID: the HAProxy worker's pid. */
  pid: number | undefined;
  message: string;
}

/** The largest PRI value: facility 23 (local7) × 8 + severity 7. */
const MAX_PRI = 191;
const RFC5424 = /^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) ?([\s\S]*)$/;

export class SyslogParseError extends Error {
  readonly kind = 'syslog';
  constructor(message: string) {
    super(message);
    this.name = 'SyslogParseError';
  }
}

/** Parses one RFC 5424 message; throws SyslogParseError on anything else. */
export function parseSyslogMessage(text: string): SyslogMessage {
  const match = RFC5424.exec(text);
  if (match === null) throw new SyslogParseError('not an RFC 5424 syslog message');
  const [, priText = '', timestamp = '-', , , procId = '-', , , message = ''] = match;
  const pri = Number(priText);
  if (pri > MAX_PRI) throw new SyslogParseError(`PRI ${pri} is out of range (0..${MAX_PRI})`);
  const pid = /^\d{1,10}$/.test(procId) ? Number(procId) : undefined;
  return {
    facility: Math.floor(pri / 8),
    severity: SYSLOG_SEVERITIES[pri % 8] as SyslogSeverity,
    timestamp: timestamp === '-' ? undefined : timestamp,
    pid,
    // HAProxy ends messages with a newline; the frame boundary already delimits them.
    message: message.endsWith('\n') ? message.replace(/\n+$/, '') : message,
  };
}

export type LogLevelName = 'error' | 'warn' | 'info' | 'debug';

/** Syslog severity → our log level: emerg..err are errors, warning a warning, notice and info info. */
export function levelOfSeverity(severity: SyslogSeverity): LogLevelName {
  switch (severity) {
    case 'emerg':
    case 'alert':
    case 'crit':
    case 'err':
      return 'error';
    case 'warning':
      return 'warn';
    case 'notice':
    case 'info':
      return 'info';
    case 'debug':
      return 'debug';
  }
}
