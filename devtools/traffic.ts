/**
 * Continuous HTTP traffic for tests: `concurrency` loops of keep-alive (or `Connection: close`) GETs against a local port,
 * bounded by a maximum duration, counting successes, failures (with reasons) and who answered.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { waitFor } from './ports.js';

/** The window in which waitForAnswers looks at who answered. */
const ANSWER_WINDOW_MS = 300;

export interface TrafficReport {
  ok: number;
  failed: number;
  failures: string[];
  answers: Map<string, number>;
  /** performance.now() of the first and the last failed request (undefined while none failed). */
  firstFailedAt: number | undefined;
  lastFailedAt: number | undefined;
  /** performance.now() of the last response with each body (when it ended). */
  lastAnswerAt: Map<string, number>;
}

export interface TrafficOptions {
  /**
   * Pause of a loop after a failed request (default 0: retry at once). While a listener refuses
   * connections, a loop without a pause fails thousands of times a second; with one, the number of
   * failures reads as the outage's length.
   */
  pauseAfterFailureMs?: number;
  /** false: every request on a new connection with `Connection: close` (default true: keep-alive). */
  keepAlive?: boolean;
}

export class Traffic {
  readonly #report: TrafficReport = { ok: 0, failed: 0, failures: [], answers: new Map(), firstFailedAt: undefined, lastFailedAt: undefined, lastAnswerAt: new Map() };
  readonly #agent: Agent;
  readonly #keepAlive: boolean;
  #running = true;
  readonly #loops: Promise<void>[];
  readonly #deadline: number;
  readonly #pauseAfterFailureMs: number;

  constructor(port: number, concurrency = 4, maxDurationMs = 120_000, options: TrafficOptions = {}) {
    this.#deadline = Date.now() + maxDurationMs;
    this.#keepAlive = options.keepAlive ?? true;
    this.#agent = new Agent({ keepAlive: this.#keepAlive, maxSockets: 64 });
    this.#pauseAfterFailureMs = options.pauseAfterFailureMs ?? 0;
    this.#loops = Array.from({ length: concurrency }, () => this.#loop(port));
  }

  get report(): TrafficReport {
    return this.#report;
  }

  async stop(): Promise<TrafficReport> {
    this.#running = false;
    await Promise.all(this.#loops);
    this.#agent.destroy();
    return this.#report;
  }

  async #loop(port: number): Promise<void> {
    while (this.#running && Date.now() < this.#deadline) {
      try {
        const { status, body } = await this.#get(port);
        if (status === 200) {
          this.#report.ok++;
          this.#report.answers.set(body, (this.#report.answers.get(body) ?? 0) + 1);
          this.#report.lastAnswerAt.set(body, performance.now());
          continue;
        }
        this.#fail(`status ${status}: ${body.slice(0, 200)}`);
      } catch (err) {
        this.#fail((err as Error).message);
      }
      if (this.#pauseAfterFailureMs > 0) await new Promise((r) => setTimeout(r, this.#pauseAfterFailureMs));
    }
  }

  #fail(reason: string): void {
    const now = performance.now();
    this.#report.firstFailedAt ??= now;
    this.#report.lastFailedAt = now;
    this.#report.failed++;
    if (this.#report.failures.length < 20) this.#report.failures.push(`${new Date().toISOString()} ${reason}`);
  }

  #get(port: number): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const headers = this.#keepAlive ? {} : { connection: 'close' };
      const req = request({ host: '127.0.0.1', port, path: '/', agent: this.#agent, headers, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('request timed out after 5 s')));
      req.on('error', reject);
      req.end();
    });
  }
}

/**
 * Waits until the traffic is answered by exactly these instances (bodies `hello from <id>`, as
 * devtools/apps.ts answers): within a 300 ms window every one of them answers, and no other.
 */
export async function waitForAnswers(traffic: Traffic, ids: readonly string[], timeoutMs = 30_000): Promise<void> {
  const wanted = new Set(ids.map((id) => `hello from ${id}`));
  await waitFor(
    `traffic answered by ${ids.join(', ')}`,
    async () => {
      const before = new Map(traffic.report.answers);
      await new Promise((r) => setTimeout(r, ANSWER_WINDOW_MS));
      const recent = [...traffic.report.answers].filter(([body, n]) => n > (before.get(body) ?? 0)).map(([body]) => body);
      return recent.length === wanted.size && recent.every((b) => wanted.has(b)) ? true : undefined;
    },
    timeoutMs,
    0,
  );
}
