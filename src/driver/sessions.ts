/**
 * Finding and closing open client sessions through the runtime API: `show sess`, then
 * `shutdown session <ptr>`. Used to close connections whose source a new intention denies.
 *
 * Measured on 2.6.12, one line per stream:
 *   0x55c7becff9c0: proto=tcpv4 src=127.0.0.1:51250 fe=public_listener be=local_app srv=app ts=00 ...
 * Internal streams (the SPOE applet, the CLI itself) show `proto=?` or `fe=GLOBAL` and no usable
 * source. An idle HTTP keep-alive connection has no stream and is not listed: those are asked
 * again on their next request through the intentions epoch (translate/spoe.ts) instead.
 */
import { RuntimeSession, type SessionOptions } from './runtime-session.js';

export interface LiveStream {
  /** The pointer `show sess` prints, which `shutdown session` takes. */
  id: string;
  /** `ip:port` as printed (IPv6 without brackets). */
  source: string;
  frontend: string;
}

const STREAM_LINE = /^(0x[0-9a-f]+): proto=\S+ src=(\S+) fe=(\S+) /;

export function parseShowSess(text: string): LiveStream[] {
  const streams: LiveStream[] = [];
  for (const line of text.split('\n')) {
    const m = STREAM_LINE.exec(line);
    if (m === null) continue;
    const [, id, source, frontend] = m as unknown as [string, string, string, string];
    streams.push({ id, source, frontend });
  }
  return streams;
}

/**
 * Closes the streams of `frontend` whose source is in `sources`. Returns the number closed; a
 * stream that ended in the meantime is not an error.
 */
export async function closeSessionsFrom(adminSocket: string, frontend: string, sources: ReadonlySet<string>, options: SessionOptions = {}): Promise<number> {
  if (sources.size === 0) return 0;
  const session = await RuntimeSession.open(adminSocket, options);
  try {
    const streams = parseShowSess(await session.send('show sess')).filter((s) => s.frontend === frontend && sources.has(s.source));
    let closed = 0;
    for (const stream of streams) {
      const answer = await session.send(`shutdown session ${stream.id}`);
      if (answer === '') closed += 1;
    }
    return closed;
  } finally {
    session.close();
  }
}
