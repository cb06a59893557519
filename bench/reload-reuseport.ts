/**
 * Hitless reloads with and without `noreuseport`, measured on a real sidecar pair:
 * `node --import tsx bench/reload-reuseport.ts [--reloads 10] [--rounds with,without,without,with]`.
 *
 * A Consul dev agent, an HTTP app `api`, and haproxy-connect for `web` (upstream api) and `api`,
 * protocol http. Each round puts both sidecars' haproxy.cfg in one mode (the rendered config has
 * `noreuseport`; "without" removes the line) and makes both HAProxy bind afresh in it: the master
 * is SIGKILLed and the daemon's supervisor restarts it from the file on disk (reloads pass the
 * listening sockets on, so only a new process binds). Then, under keep-alive and under
 * `Connection: close` traffic (4 loops each, web's upstream listener -> api), it reloads the web
 * sidecar's HAProxy, then the api sidecar's, `--reloads` times each through the master CLI, and
 * counts the failed requests. Each round also checks the mode: a plain HAProxy (SO_REUSEPORT, as
 * by default) is started on api's public port and must fail to bind with `noreuseport` and bind
 * without it. Prints a markdown table; stops everything it started, by pid.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHttpApp } from '../devtools/apps.js';
import { ConsulDevAgent, checksPassing, registerMeshService } from '../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../devtools/ports.js';
import { httpGet } from '../devtools/probes.js';
import { isAlive } from '../devtools/proc.js';
import { type SidecarProcess, startReadySidecar } from '../devtools/sidecar.js';
import { Traffic } from '../devtools/traffic.js';
import { parseShowProc, sendCommand, type ShowProc } from '../src/driver/master-cli.js';
import { MASTER_SOCKET } from '../src/main.js';
import { HAPROXY_BIN } from '../devtools/haproxy-bin.js';

const CONCURRENCY = 4;
/** Traffic before the first and after the last reload of a cell, so the window holds every effect. */
const SETTLE_MS = 500;
/** Between two reloads: the old worker has finished by then (no long requests here). */
const RELOAD_GAP_MS = 400;
const NOREUSEPORT_LINE = '    noreuseport';

type Mode = 'with' | 'without';

interface Cell {
  mode: Mode;
  traffic: 'keep-alive' | 'close';
  reloaded: 'web' | 'api';
  reloads: number;
  requests: number;
  failed: number;
  failures: string[];
}

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv: readonly string[]): { reloads: number; rounds: Mode[] } {
  let reloads = 10;
  let rounds: Mode[] = ['with', 'without', 'without', 'with'];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--reloads') reloads = Math.max(1, Math.min(100, Number(argv[++i])));
    else if (argv[i] === '--rounds') rounds = (argv[++i] ?? '').split(',').filter((m): m is Mode => m === 'with' || m === 'without');
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return { reloads, rounds };
}

const showProc = async (runDir: string): Promise<ShowProc> => parseShowProc(await sendCommand(join(runDir, MASTER_SOCKET), 'show proc', { timeoutMs: 5_000 }));

/** Reloads through the master CLI and waits for the new worker; throws on a failed reload. */
async function reload(runDir: string): Promise<void> {
  const before = await showProc(runDir);
  const old = new Set(before.workers.map((w) => w.pid));
  await sendCommand(join(runDir, MASTER_SOCKET), 'reload', { timeoutMs: 5_000 }).catch(() => '');
  await waitFor(
    'a new worker',
    async () => {
      const now = await showProc(runDir).catch(() => undefined);
      if (now === undefined || now.master.reloads <= before.master.reloads) return undefined;
      if ((now.master.failedReloads ?? 0) > (before.master.failedReloads ?? 0)) throw new Error(`reload failed in ${runDir}`);
      return now.workers.some((w) => !w.old && !old.has(w.pid)) ? true : undefined;
    },
    10_000,
    20,
  );
}

/** Adds or removes the noreuseport line; returns whether the file changed. */
function setMode(cfg: string, mode: Mode): boolean {
  const text = readFileSync(cfg, 'utf8');
  const lines = text.split('\n').filter((l) => l !== NOREUSEPORT_LINE);
  if (mode === 'with') lines.splice(lines.indexOf('global') + 1, 0, NOREUSEPORT_LINE);
  if (lines.join('\n') === text) return false;
  writeFileSync(cfg, lines.join('\n'));
  return true;
}

/**
 * After a restart: Consul's TCP check of api's sidecar (every second) may have seen the port closed
 * and web may have dropped api's instance for a moment. Wait until the checks pass, then for a
 * stretch of consecutive answers through the mesh.
 */
async function settle(agent: ConsulDevAgent, meshAnswers: () => Promise<true | undefined>): Promise<void> {
  await checksPassing(agent, 'api-sidecar-proxy', 30_000, 100);
  await delay(2_500);
  await waitFor(
    '20 answers in a row through the mesh',
    async () => {
      for (let i = 0; i < 20; i++) if ((await meshAnswers()) === undefined) return undefined;
      return true;
    },
    30_000,
    100,
  );
}

/** Puts the mode in haproxy.cfg and restarts HAProxy (SIGKILL of the master; the supervisor restarts it from the file). */
async function bindAfresh(runDir: string, mode: Mode): Promise<void> {
  const cfg = join(runDir, 'haproxy.cfg');
  setMode(cfg, mode);
  const before = await showProc(runDir);
  process.kill(before.master.pid, 'SIGKILL');
  await waitFor(
    'the supervisor to restart haproxy',
    async () => {
      const now = await showProc(runDir).catch(() => undefined);
      return now !== undefined && now.master.pid !== before.master.pid && now.workers.some((w) => !w.old) ? true : undefined;
    },
    30_000,
    50,
  );
  const written = readFileSync(cfg, 'utf8').split('\n').includes(NOREUSEPORT_LINE);
  if (written !== (mode === 'with')) throw new Error(`${cfg} was rewritten: noreuseport ${written ? 'present' : 'absent'} in mode ${mode}`);
}

/** Whether a plain HAProxy (SO_REUSEPORT) can bind `port` next to ours; it is stopped at once. */
async function secondHaproxyBinds(port: number, dir: string): Promise<{ binds: boolean; alert: string }> {
  const cfg = join(dir, 'second.cfg');
  writeFileSync(
    cfg,
    `defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nfrontend second\n    bind 127.0.0.1:${port}\n    http-request return status 200 content-type text/plain string second\n`,
  );
  const child = spawn(HAPROXY_BIN, ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const outcome = await Promise.race([exited, delay(1_500).then(() => 'running' as const)]);
  if (outcome === 'running') {
    child.kill('SIGKILL');
    await exited;
  }
  return { binds: outcome === 'running', alert: stderr.split('\n').find((l) => l.includes('[ALERT]')) ?? `exit ${String(outcome)}` };
}

async function measure(mode: Mode, traffic: Cell['traffic'], reloaded: Cell['reloaded'], runDir: string, port: number, reloads: number): Promise<Cell> {
  const load = new Traffic(port, CONCURRENCY, 120_000, { keepAlive: traffic === 'keep-alive' });
  try {
    await delay(SETTLE_MS);
    for (let i = 0; i < reloads; i++) {
      await reload(runDir);
      await delay(RELOAD_GAP_MS);
    }
    await delay(SETTLE_MS);
  } finally {
    await load.stop();
  }
  const { ok, failed, failures } = load.report;
  return { mode, traffic, reloaded, reloads, requests: ok + failed, failed, failures: failures.slice(0, 3) };
}

async function main(): Promise<void> {
  const { reloads, rounds } = parseArgs(process.argv.slice(2));
  const agent = await ConsulDevAgent.start();
  const baseDir = await mkdtemp(join(tmpdir(), 'hc-reuseport-'));
  const sidecars: SidecarProcess[] = [];
  const [apiPort, apiSidecar, webPort, webSidecar, webToApi] = (await freePorts(5)) as [number, number, number, number, number];
  const app = await startHttpApp('api', apiPort);
  const cells: Cell[] = [];
  const checks: string[] = [];
  try {
    await registerMeshService(agent, { id: 'api', name: 'api', port: apiPort, sidecarPort: apiSidecar, protocol: 'http' });
    await registerMeshService(agent, {
      id: 'web',
      name: 'web',
      port: webPort,
      sidecarPort: webSidecar,
      protocol: 'http',
      upstreams: [{ destinationName: 'api', localBindPort: webToApi, protocol: 'http' }],
    });
    const web = await startReadySidecar(sidecars, 'web', agent.httpAddr, baseDir, ['-log-level', 'info']);
    const api = await startReadySidecar(sidecars, 'api', agent.httpAddr, baseDir, ['-log-level', 'info']);
    const runDirs = { web: web.find('created run directory')?.runDir as string, api: api.find('created run directory')?.runDir as string };
    const meshAnswers = async (): Promise<true | undefined> => ((await httpGet(webToApi).catch(() => undefined))?.status === 200 ? true : undefined);
    await waitFor('web -> api', meshAnswers, 30_000, 100);
    for (const [round, mode] of rounds.entries()) {
      await bindAfresh(runDirs.web, mode);
      await bindAfresh(runDirs.api, mode);
      await settle(agent, meshAnswers);
      const second = await secondHaproxyBinds(apiSidecar, baseDir);
      checks.push(
        `round ${round + 1} (${mode} noreuseport): a second HAProxy on api's public port ${second.binds ? 'bound silently' : `failed to bind: ${second.alert.replace(/^\[ALERT\]\s+\(\d+\) : /, '')}`}`,
      );
      await settle(agent, meshAnswers);
      for (const traffic of ['keep-alive', 'close'] as const) {
        for (const reloaded of ['web', 'api'] as const) {
          // A reload runs the file on disk: it must hold the live servers (the daemon rewrites it after runtime changes) and the round's mode.
          for (const dir of Object.values(runDirs)) setMode(join(dir, 'haproxy.cfg'), mode);
          const logsBefore = web.logs.length;
          const cell = await measure(mode, traffic, reloaded, runDirs[reloaded], webToApi, reloads);
          cells.push(cell);
          // Anything the web daemon changed meanwhile (a Consul health flip) would be in the numbers: say so.
          const daemonChanges = web.logs
            .slice(logsBefore)
            .filter((l) => ['applied runtime changes', 'reloading haproxy', 'haproxy drifted from the applied configuration; repairing with a reload'].includes(l.msg as string))
            .map((l) => `${l.time as string} ${l.msg as string} ${JSON.stringify(l.kinds ?? l.reasons ?? l.drift ?? '')}`);
          say(
            `round ${round + 1} ${mode} noreuseport, ${traffic}, reloading ${reloaded}: ${cell.failed} failed of ${cell.requests} over ${cell.reloads} reloads ${cell.failures.length > 0 ? JSON.stringify(cell.failures) : ''}${daemonChanges.length > 0 ? ` web daemon meanwhile: ${JSON.stringify(daemonChanges)}` : ''}`,
          );
        }
      }
    }
    for (const s of sidecars) if (s.process.exitCode !== null) throw new Error(`a sidecar died: ${s.stderr}`);
  } finally {
    await Promise.all(sidecars.map((s) => s.stop()));
    await app.close();
    await agent.stop();
    await rm(baseDir, { recursive: true, force: true });
  }
  say('');
  say('| noreuseport | traffic | reloaded sidecar | reloads | requests | failed | failed per reload |');
  say('|---|---|---|---|---|---|---|');
  for (const mode of ['with', 'without'] as const) {
    for (const traffic of ['keep-alive', 'close'] as const) {
      for (const reloaded of ['web', 'api'] as const) {
        const same = cells.filter((c) => c.mode === mode && c.traffic === traffic && c.reloaded === reloaded);
        if (same.length === 0) continue;
        const sum = (f: (c: Cell) => number): number => same.reduce((n, c) => n + f(c), 0);
        say(`| ${mode} | ${traffic} | ${reloaded} | ${sum((c) => c.reloads)} | ${sum((c) => c.requests)} | ${sum((c) => c.failed)} | ${(sum((c) => c.failed) / sum((c) => c.reloads)).toFixed(2)} |`);
      }
    }
  }
  say('');
  for (const line of checks) say(line);
  const leftovers = sidecars.filter((s) => isAlive(s.pid));
  if (leftovers.length > 0) say(`warning: sidecars still running: ${leftovers.map((s) => s.pid).join(', ')}`);
}

await main();
