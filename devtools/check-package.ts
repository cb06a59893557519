/**
 * The end of scripts/check-package.sh: runs the haproxy-connect bin of a copy installed from the
 * npm tarball (argv[2]) as a user would, against a real Consul dev agent and real HAProxy.
 * A service `web` is registered with a sidecar; the installed bin starts for it from a directory
 * outside the repository with a minimal environment, must log `sidecar ready`, serve one mTLS
 * request from a client holding a Consul leaf through to the app, and exit 0 on SIGTERM with its
 * run directory and owner record removed.
 *
 *   node --import tsx devtools/check-package.ts <prefix>/node_modules/.bin/haproxy-connect
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, realpath, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { daemonNode } from './daemon-node.js';
import { ConsulDevAgent, REPO_ROOT, registerMeshService } from './consul-dev-agent.js';
import { freePorts, waitFor } from './ports.js';
import { descendants } from './proc.js';
import { tlsHttpProbe } from './probes.js';

interface Leaf {
  CertPEM: string;
  PrivateKeyPEM: string;
}
interface Roots {
  Roots: Array<{ RootCert: string }>;
}

function say(line: string): void {
  process.stdout.write(`check-package: ${line}\n`);
}

/** The installed bin as a child process, with its JSON log lines. */
class InstalledSidecar {
  readonly child: ChildProcess;
  readonly logs: Array<Record<string, unknown>> = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(bin: string, args: string[], cwd: string) {
    // Only what a service manager would pass: no NODE_OPTIONS, no tsx loader, no repo on any path.
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
    this.child = spawn(bin, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        try {
          this.logs.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.logs.push({ raw: line });
        }
      }
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-10_000);
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  find(msg: string): Record<string, unknown> | undefined {
    return this.logs.find((l) => l.msg === msg);
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

async function main(binArg: string | undefined): Promise<void> {
  if (binArg === undefined) throw new Error('usage: check-package.ts <installed haproxy-connect bin>');
  const bin = await realpath(binArg);
  if (bin.startsWith(`${REPO_ROOT}/`)) throw new Error(`${bin} is inside the repository: pass the bin of the installed copy`);

  const agent = await ConsulDevAgent.start();
  const work = await mkdtemp(join(tmpdir(), 'hc-check-package-'));
  const baseDir = join(work, 'run');
  await mkdir(baseDir, { mode: 0o700 });
  let app: Server | undefined;
  let sidecar: InstalledSidecar | undefined;
  try {
    const [appPort, sidecarPort] = (await freePorts(2)) as [number, number];
    app = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('hello from web\n'));
    await new Promise<void>((resolve) => app?.listen(appPort, '127.0.0.1', resolve));
    await registerMeshService(agent, { id: 'web', name: 'web', port: appPort, sidecarPort, protocol: 'http' });

    sidecar = new InstalledSidecar(binArg, ['-sidecar-for', 'web', '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', baseDir], work);
    const started = Date.now();
    const running = sidecar;
    const exitedEarly = running.exited.then(({ code, signal }) => {
      throw new Error(`haproxy-connect exited with ${code ?? signal} before 'sidecar ready': ${running.stderr.trim()}`);
    });
    exitedEarly.catch(() => {});
    await Promise.race([waitFor(`'sidecar ready' from ${bin}`, async () => running.find('sidecar ready'), 60_000), exitedEarly]);
    say(`'sidecar ready' ${Date.now() - started} ms after start (pid ${running.child.pid}, ${bin})`);
    // The bin's shebang (`env -S node <flags>`) worked: the daemon's Node runs with those flags.
    const argv = (await readFile(`/proc/${running.child.pid}/cmdline`, 'utf8')).split('\0');
    const wanted = daemonNode().args;
    if (argv[0] === undefined || !/node/.test(argv[0]) || !wanted.every((flag) => argv.includes(flag))) {
      throw new Error(`the installed bin did not start Node with ${wanted.join(' ')}: its command line is ${argv.join(' ')}`);
    }
    say(`Node runs with the bin's flags: ${argv.slice(0, 1 + wanted.length).join(' ')}`);

    const roots = await agent.get<Roots>('/v1/agent/connect/ca/roots');
    const leaf = await agent.get<Leaf>('/v1/agent/connect/ca/leaf/client');
    const ca = roots.Roots.map((r) => r.RootCert).join('\n');
    const answer = await waitFor(
      'an mTLS request through the sidecar',
      async () => {
        const raw = await tlsHttpProbe({ port: sidecarPort, ca, cert: leaf.CertPEM, key: leaf.PrivateKeyPEM });
        return raw.startsWith('HTTP/1.1 200') ? raw : undefined;
      },
      20_000,
      200,
    );
    if (!answer.includes('hello from web')) throw new Error(`unexpected answer through the sidecar: ${answer}`);
    say('an mTLS request with a Consul leaf reached the app through HAProxy: 200');

    const signalledAt = Date.now();
    running.child.kill('SIGTERM');
    const timer = setTimeout(() => running.child.kill('SIGKILL'), 30_000);
    const { code, signal } = await running.exited;
    clearTimeout(timer);
    if (code !== 0) throw new Error(`haproxy-connect exited with ${code ?? signal} after SIGTERM: ${running.stderr}`);
    say(`SIGTERM: exit 0 after ${Date.now() - signalledAt} ms`);
    const left = await readdir(baseDir);
    if (left.length > 0) throw new Error(`left in -haproxy-cfg-base-path after a clean exit: ${left.join(', ')}`);
    say('run directory and owner record removed');
  } finally {
    if (sidecar?.running() === true) {
      // A failed check must not leave HAProxy behind: it runs in its own session, out of reach of
      // a signal to the daemon.
      const haproxy = descendants(sidecar.child.pid ?? -1);
      sidecar.child.kill('SIGKILL');
      for (const pid of haproxy) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    app?.closeAllConnections();
    await new Promise<void>((resolve) => (app === undefined ? resolve() : app.close(() => resolve())));
    await agent.stop();
    await rm(work, { recursive: true, force: true });
  }
}

try {
  await main(process.argv[2]);
} catch (err) {
  process.stderr.write(`check-package: FAIL: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
