/**
 * A real `consul agent -dev` on loopback with free ports and its own data dir, for the demo and
 * the integration tests. The binary is .deps/bin/consul (built by scripts/build-consul.sh) unless
 * CONSUL_BIN says otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { backgroundChild, retryOnPortTaken } from './children.js';
import { freePorts, waitFor } from './ports.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const CONSUL_BIN = process.env.CONSUL_BIN ?? join(REPO_ROOT, '.deps/bin/consul');

export interface ConsulDevAgentOptions {
  /** Extra HCL written to a config file (e.g. ACLs). */
  extraConfig?: string;
  /** Token used by the helper's own API calls (with ACLs on). */
  token?: string;
}

/** An agent's HTTP API as the test helpers use it. */
export interface AgentFetch {
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** PUT with a JSON body; the parsed answer (undefined when empty). Throws on a non-2xx status. */
export async function agentPut(agent: AgentFetch, path: string, body?: unknown): Promise<unknown> {
  const res = await agent.fetch(path, { method: 'PUT', ...(body !== undefined && { body: JSON.stringify(body) }) });
  const text = await res.text();
  if (!res.ok) throw new Error(`PUT ${path} failed: ${res.status} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

/** GET and parse JSON. Throws on a non-2xx status. */
export async function agentGet<T>(agent: AgentFetch, path: string): Promise<T> {
  const res = await agent.fetch(path);
  if (!res.ok) throw new Error(`GET ${path} failed: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export class ConsulDevAgent {
  readonly httpAddr: string;
  readonly process: ChildProcess;
  readonly dataDir: string;
  readonly token: string | undefined;
  /** The agent's serf WAN port (on 127.0.0.1): another dev agent joins its WAN pool there (`retry_join_wan`). */
  readonly serfWanPort: number;
  #exited: Promise<void>;
  output = '';

  private constructor(httpAddr: string, child: ChildProcess, dataDir: string, token: string | undefined, serfWanPort: number) {
    this.httpAddr = httpAddr;
    this.serfWanPort = serfWanPort;
    this.process = child;
    this.dataDir = dataDir;
    this.token = token;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
    child.stdout?.on('data', (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-20_000);
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-20_000);
    });
  }

  /** Starts an agent on free ports; when one was taken meanwhile, again on new ports (3 attempts). */
  static async start(options: ConsulDevAgentOptions = {}): Promise<ConsulDevAgent> {
    return retryOnPortTaken(() => ConsulDevAgent.#startOnce(options));
  }

  static async #startOnce(options: ConsulDevAgentOptions): Promise<ConsulDevAgent> {
    const dataDir = await mkdtemp(join(tmpdir(), 'consul-dev-'));
    const [http, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
    const args = [
      'agent',
      '-dev',
      '-bind',
      '127.0.0.1',
      '-client',
      '127.0.0.1',
      '-node',
      'dev',
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
      'warn',
    ];
    if (options.extraConfig !== undefined) args.push('-hcl', options.extraConfig);
    const child = spawn(CONSUL_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    backgroundChild(child);
    const agent = new ConsulDevAgent(`127.0.0.1:${http}`, child, dataDir, options.token, serfWan);
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (err) => reject(new Error(`cannot run ${CONSUL_BIN}: ${err.message} (run scripts/setup.sh)`)));
      child.once('exit', (code) => reject(new Error(`consul exited with ${code}: ${agent.output}`)));
    });
    failed.catch(() => {});
    const ready = Promise.race([
      waitFor(
        'the consul dev agent to elect a leader and sign leaf certificates',
        async () => {
          const res = await agent.fetch('/v1/status/leader');
          const leader = (await res.json()) as string;
          if (leader === '') return undefined;
          const roots = await agent.fetch('/v1/agent/connect/ca/roots');
          return roots.ok ? true : undefined;
        },
        60_000,
      ),
      failed,
    ]);
    try {
      await ready;
    } catch (err) {
      // Stopped here (the process and its data dir): a caller whose start failed holds no agent to stop.
      await agent.stop();
      throw err;
    }
    return agent;
  }

  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token !== undefined) headers.set('X-Consul-Token', this.token);
    return fetch(`http://${this.httpAddr}${path}`, { ...init, headers });
  }

  async put(path: string, body?: unknown): Promise<unknown> {
    return agentPut(this, path, body);
  }

  async get<T>(path: string): Promise<T> {
    return agentGet<T>(this, path);
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), 10_000);
      await this.#exited;
      clearTimeout(timer);
    }
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** Registers a service with a Connect sidecar; checks run every second so tests do not wait 10 s. */
export interface MeshServiceSpec {
  id: string;
  name: string;
  port: number;
  sidecarPort: number;
  protocol?: string;
  /** Extra opaque proxy Config entries (e.g. a deliberately wrong value). */
  proxyConfig?: Record<string, unknown>;
  upstreams?: Array<{ destinationName: string; localBindPort: number; protocol?: string; datacenter?: string }>;
  /** A TTL check on the service itself, so tests can turn it critical. */
  ttlCheck?: boolean;
  tags?: string[];
}

/** Any agent helper with `put` (a dev agent, or a ConsulServerAgent from consul-server-agent.ts). */
/** Resolves once the service `serviceId` has checks on the agent and every one passes; throws after `timeoutMs`. */
export async function checksPassing(agent: Pick<ConsulDevAgent, 'get'>, serviceId: string, timeoutMs: number, intervalMs: number): Promise<void> {
  await waitFor(
    `${serviceId} checks passing`,
    async () => {
      const checks = await agent.get<Array<{ Status: string }>>(`/v1/health/checks/${serviceId}`);
      return checks.length > 0 && checks.every((c) => c.Status === 'passing') ? true : undefined;
    },
    timeoutMs,
    intervalMs,
  );
}

export async function registerMeshService(agent: Pick<ConsulDevAgent, 'put'>, spec: MeshServiceSpec): Promise<void> {
  await agent.put('/v1/agent/service/register', {
    ID: spec.id,
    Name: spec.name,
    Port: spec.port,
    Address: '127.0.0.1',
    ...(spec.tags !== undefined && { Tags: spec.tags }),
    ...(spec.ttlCheck === true && { Check: { CheckID: `${spec.id}-ttl`, Name: 'app TTL', TTL: '600s', Status: 'passing' } }),
    Connect: {
      SidecarService: {
        Port: spec.sidecarPort,
        ...(spec.tags !== undefined && { Tags: spec.tags }),
        Checks: [
          { Name: 'Connect Sidecar Listening', TCP: `127.0.0.1:${spec.sidecarPort}`, Interval: '1s' },
          { Name: 'Connect Sidecar Aliasing', AliasService: spec.id },
        ],
        Proxy: {
          Config: { ...(spec.protocol !== undefined && { protocol: spec.protocol }), ...spec.proxyConfig },
          Upstreams: (spec.upstreams ?? []).map((u) => ({
            DestinationName: u.destinationName,
            LocalBindPort: u.localBindPort,
            ...(u.datacenter !== undefined && { Datacenter: u.datacenter }),
            ...(u.protocol !== undefined && { Config: { protocol: u.protocol } }),
          })),
        },
      },
    },
  });
}

/**
 * registerMeshService with the service's Meta (e.g. `{ version: 'v2' }`). A sidecar registered
 * with its service inherits the Meta when it has none of its own (Consul's agent/sidecar_service.go),
 * so discovery-chain subset filters such as `Service.Meta.version == v2`, which Consul evaluates
 * on the proxy's health entries, see it.
 */
export async function registerMeshServiceWithMeta(agent: Pick<ConsulDevAgent, 'put'>, spec: MeshServiceSpec, meta: Record<string, string>): Promise<void> {
  await registerMeshService({ put: (path: string, body?: unknown) => agent.put(path, { ...(body as Record<string, unknown>), Meta: meta }) }, spec);
}
