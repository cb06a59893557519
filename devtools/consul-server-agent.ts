/**
 * A real single-node Consul server agent that is NOT `-dev`, for tests that restart the agent:
 * `-server -bootstrap-expect 1` on loopback with free ports, Connect on (built-in CA), and a
 * persistent `-data-dir`. restart() stops it with SIGTERM and starts it again with the same data
 * dir and ports, so what a real agent keeps across a restart is kept: the raft state (catalog,
 * CA, intentions) and the services and checks registered through the agent API (persisted in the
 * data dir; the checks come back critical until they run again).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { CONSUL_BIN, agentGet, agentPut } from './consul-dev-agent.js';
import { backgroundChild, retryOnPortTaken } from './children.js';
import { freePorts, waitFor } from './ports.js';

/** A server leaves nothing to raft on SIGTERM (leave_on_terminate defaults to false for servers; set anyway). */
const SERVER_CONFIG = [
  'connect { enabled = true }',
  'leave_on_terminate = false',
  // No call to checkpoint-api.hashicorp.com: tests stay on loopback.
  'disable_update_check = true',
  // The dev agent's raft timing (1 s elections instead of 5 s): a restart is ready sooner.
  'performance { raft_multiplier = 1 }',
].join('\n');
const STOP_TIMEOUT_MS = 10_000;
const READY_TIMEOUT_MS = 60_000;

export interface ConsulServerAgentOptions {
  /** Extra HCL, appended to the server configuration. */
  extraConfig?: string;
  node?: string;
  /** The agent's -log-level (default warn); its output is kept in `output`. */
  logLevel?: string;
}

/** Timings of one restart, in ms (performance.now() values and durations). */
export interface AgentRestart {
  /** When SIGTERM was sent. */
  stoppingAt: number;
  /** SIGTERM -> the process exited. */
  stopMs: number;
  /** Spawn -> a leader and CA roots answered on the HTTP API. */
  startMs: number;
  /** When the agent answered again (the end of the restart). */
  readyAt: number;
}

export class ConsulServerAgent {
  readonly httpAddr: string;
  readonly dataDir: string;
  readonly #args: readonly string[];
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  /** The last 20,000 characters of output, across restarts. */
  output = '';

  private constructor(httpAddr: string, dataDir: string, args: readonly string[]) {
    this.httpAddr = httpAddr;
    this.dataDir = dataDir;
    this.#args = args;
  }

  /** Starts a server on free ports; when one was taken meanwhile, again on new ports (3 attempts). */
  static async start(options: ConsulServerAgentOptions = {}): Promise<ConsulServerAgent> {
    return retryOnPortTaken(() => ConsulServerAgent.#startOnce(options));
  }

  static async #startOnce(options: ConsulServerAgentOptions): Promise<ConsulServerAgent> {
    const dataDir = await mkdtemp(join(tmpdir(), 'consul-server-'));
    const [http, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
    const args = [
      'agent',
      '-server',
      '-bootstrap-expect',
      '1',
      '-bind',
      '127.0.0.1',
      '-advertise',
      '127.0.0.1',
      '-client',
      '127.0.0.1',
      '-node',
      options.node ?? 'server-1',
      '-http-port',
      String(http),
      '-dns-port',
      '-1',
      '-grpc-port',
      '-1',
      '-grpc-tls-port',
      '-1',
      '-serf-lan-port',
      String(serfLan),
      '-serf-wan-port',
      String(serfWan),
      '-server-port',
      String(server),
      '-data-dir',
      dataDir,
      '-log-level',
      options.logLevel ?? 'warn',
      '-hcl',
      SERVER_CONFIG,
      ...(options.extraConfig !== undefined ? ['-hcl', options.extraConfig] : []),
    ];
    const agent = new ConsulServerAgent(`127.0.0.1:${http}`, dataDir, args);
    try {
      await agent.#launch();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  /** The current agent process (a new one after each restart); undefined while stopped. */
  get process(): ChildProcess | undefined {
    return this.#child;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** SIGTERM, wait for the exit, start again with the same data dir and ports, wait until it serves. */
  async restart(): Promise<AgentRestart> {
    const stoppingAt = performance.now();
    await this.#terminate();
    const spawnedAt = performance.now();
    await this.#launch();
    const readyAt = performance.now();
    return { stoppingAt, stopMs: spawnedAt - stoppingAt, startMs: readyAt - spawnedAt, readyAt };
  }

  /** Stops the agent and removes its data dir. */
  async stop(): Promise<void> {
    await this.#terminate();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`http://${this.httpAddr}${path}`, init);
  }

  async put(path: string, body?: unknown): Promise<unknown> {
    return agentPut(this, path, body);
  }

  async get<T>(path: string): Promise<T> {
    return agentGet<T>(this, path);
  }

  async #launch(): Promise<void> {
    const child = spawn(CONSUL_BIN, this.#args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    backgroundChild(child);
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const keep = (d: Buffer): void => {
      this.output = (this.output + d.toString()).slice(-20_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (err) => reject(new Error(`cannot run ${CONSUL_BIN}: ${err.message} (run scripts/setup.sh)`)));
      child.once('exit', (code) => reject(new Error(`consul exited with ${code}: ${this.output}`)));
    });
    failed.catch(() => {});
    await Promise.race([
      waitFor(
        'the consul server to elect itself leader and serve CA roots',
        async () => {
          const leader = (await (await this.fetch('/v1/status/leader')).json()) as string;
          if (leader === '') return undefined;
          const roots = await this.fetch('/v1/agent/connect/ca/roots');
          if (!roots.ok) return undefined;
          const { Roots } = (await roots.json()) as { Roots: unknown[] | null };
          return (Roots ?? []).length > 0 ? true : undefined;
        },
        READY_TIMEOUT_MS,
        50,
      ),
      failed,
    ]);
  }

  async #terminate(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await this.#exited;
      clearTimeout(timer);
    }
    this.#child = undefined;
  }
}
