/**
 * Writes lines to a file descriptor without ever blocking the event loop: lines are queued and
 * written asynchronously (libuv's thread pool), and when the queue exceeds a byte bound new lines
 * are dropped and counted instead of growing memory. A slow stdout reader costs access lines, not
 * SPOE verdicts or Consul watches.
 *
 * Each write holds whole lines and at most `chunkBytes` (4 KiB for stdout/stderr: PIPE_BUF, so a
 * write to a pipe is atomic and never interleaves with the logger's own synchronous lines).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { close as closeFd, write as writeFd } from 'node:fs';

/** Per sink: about 10,000 typical access lines waiting for a slow reader. */
export const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** POSIX PIPE_BUF on Linux: writes up to this size to a pipe are atomic. */
export const PIPE_CHUNK_BYTES = 4_096;
export const FILE_CHUNK_BYTES = 65_536;
/** Lines are gathered this long before a write. */
const FLUSH_DELAY_MS = 5;
/** A non-blocking descriptor that is full (EAGAIN) is retried after this long. */
const RETRY_DELAY_MS = 10;

export interface LineSinkStats {
  written: number;
  /** write(2) calls: lines are batched, so far fewer than lines. */
  writes: number;
  dropped: number;
  writeErrors: number;
}

function writeOnce(fd: number, buffer: Buffer, offset: number): Promise<number> {
  return new Promise((resolve, reject) => {
    writeFd(fd, buffer, offset, buffer.length - offset, null, (err, written) => (err ? reject(err) : resolve(written)));
  });
}

export class LineSink {
  readonly fd: number;
  readonly #owned: boolean;
  readonly #maxQueuedBytes: number;
  readonly #chunkBytes: number;
  readonly #onError: (err: NodeJS.ErrnoException) => void;
  #queue: string[] = [];
  #queuedBytes = 0;
  #flushing: Promise<void> | undefined;
  #closed = false;
  readonly stats: LineSinkStats = { written: 0, writes: 0, dropped: 0, writeErrors: 0 };

  constructor(options: { fd: number; owned: boolean; chunkBytes: number; maxQueuedBytes?: number; onError: (err: NodeJS.ErrnoException) => void }) {
    this.fd = options.fd;
    this.#owned = options.owned;
    this.#chunkBytes = options.chunkBytes;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.#onError = options.onError;
  }

  /** Queues one line (a newline is added). Returns false when it was dropped. */
  write(line: string): boolean {
    const text = `${line}\n`;
    const bytes = Buffer.byteLength(text);
    if (this.#closed || this.#queuedBytes + bytes > this.#maxQueuedBytes) {
      this.stats.dropped++;
      return false;
    }
    this.#queue.push(text);
    this.#queuedBytes += bytes;
    // Lines arrive one or two per socket read; waiting a few milliseconds turns hundreds of
    // tiny writes into one (measured: a write per line cost more CPU than formatting the line).
    this.#flushing ??= delay(FLUSH_DELAY_MS)
      .then(() => this.#flush())
      .finally(() => {
        this.#flushing = undefined;
      });
    return true;
  }

  /** Whole lines up to chunkBytes (at least one line). */
  #takeChunk(): { buffer: Buffer; lines: number } {
    let bytes = 0;
    let count = 0;
    while (count < this.#queue.length) {
      const size = Buffer.byteLength(this.#queue[count] as string);
      if (count > 0 && bytes + size > this.#chunkBytes) break;
      bytes += size;
      count++;
    }
    const lines = this.#queue.splice(0, count);
    this.#queuedBytes -= bytes;
    return { buffer: Buffer.from(lines.join('')), lines: count };
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      const { buffer, lines } = this.#takeChunk();
      let offset = 0;
      try {
        while (offset < buffer.length) {
          try {
            this.stats.writes++;
            offset += await writeOnce(this.fd, buffer, offset);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
            await delay(RETRY_DELAY_MS);
          }
        }
        this.stats.written += lines;
      } catch (err) {
        this.stats.writeErrors++;
        this.stats.dropped += lines;
        this.#onError(err as NodeJS.ErrnoException);
      }
    }
  }

  /** Waits for queued lines (bounded by the caller), then closes the descriptor if it is ours. */
  async close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#flushing ?? Promise.resolve(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (this.#owned) await new Promise<void>((resolve) => closeFd(this.fd, () => resolve()));
  }
}
