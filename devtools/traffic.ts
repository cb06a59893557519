/**
 * Continuous HTTP traffic for tests: `concurrency` loops of keep-alive GETs against a local port,
 * bounded by a maximum duration, counting successes, failures (with reasons) and who answered.
 */
import { Agent, request } from 'node:http';

export interface TrafficReport {
  ok: number;
  failed: number;
  failures: string[];
  answers: Map<string, number>;
}

export class Traffic {
  readonly #report: TrafficReport = { ok: 0, failed: 0, failures: [], answers: new Map() };
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 64 });
  #running = true;
  readonly #loops: Promise<void>[];
  readonly #deadline: number;

  constructor(port: number, concurrency = 4, maxDurationMs = 120_000) {
    this.#deadline = Date.now() + maxDurationMs;
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
        } else {
          this.#fail(`status ${status}: ${body.slice(0, 200)}`);
        }
      } catch (err) {
        this.#fail((err as Error).message);
      }
    }
  }

  #fail(reason: string): void {
    this.#report.failed++;
    if (this.#report.failures.length < 20) this.#report.failures.push(`${new Date().toISOString()} ${reason}`);
  }

  #get(port: number): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/', agent: this.#agent, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error('request timed out after 5 s')));
      req.on('error', reject);
      req.end();
    });
  }
}
