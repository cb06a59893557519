/**
 * The demo mesh: a local Consul dev agent, two apps `web` and `api` registered with Connect
 * sidecars (`web` has `api` as an upstream), and haproxy-connect running both sidecars.
 * Prints a curl line that goes through the mesh, then runs until Ctrl-C.
 * `--check` verifies the path once and exits (used by the tests).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHttpApp, type RunningApp } from '../devtools/apps.js';
import { ConsulDevAgent, CONSUL_BIN, registerMeshService } from '../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../devtools/ports.js';
import { SidecarProcess } from '../devtools/sidecar.js';

const checkOnly = process.argv.includes('--check');
const say = (line: string): void => void process.stdout.write(`${line}\n`);

const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let agent: ConsulDevAgent | undefined;
let baseDir: string | undefined;

async function cleanup(): Promise<void> {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  say(`demo: starting a Consul dev agent (${CONSUL_BIN})`);
  agent = await ConsulDevAgent.start();
  const [apiPort, apiSidecarPort, webPort, webSidecarPort, webToApiPort] = (await freePorts(5)) as [number, number, number, number, number];
  baseDir = await mkdtemp(join(tmpdir(), 'haproxy-connect-demo-'));

  apps.push(await startHttpApp('api', apiPort));
  apps.push(await startHttpApp('web', webPort, webToApiPort));
  await registerMeshService(agent, { id: 'api', name: 'api', port: apiPort, sidecarPort: apiSidecarPort, protocol: 'http' });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: webPort,
    sidecarPort: webSidecarPort,
    protocol: 'http',
    upstreams: [{ destinationName: 'api', localBindPort: webToApiPort, protocol: 'http' }],
  });
  say(`demo: Consul agent at http://${agent.httpAddr}; apps web (:${webPort}) and api (:${apiPort}) registered with sidecars`);

  for (const service of ['api', 'web']) {
    // Readable lines for people (`-log-format text`); production keeps the JSON default.
    const sidecar = new SidecarProcess(['-sidecar-for', service, '-http-addr', agent.httpAddr, '-haproxy-cfg-base-path', baseDir, '-log-level', 'info', '-log-format', 'text']);
    sidecars.push(sidecar);
    let partial = '';
    sidecar.process.stdout?.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (!checkOnly && line.trim() !== '') say(`[${service} sidecar] ${line}`);
    });
    await waitFor(
      `${service}'s sidecar to be ready (stderr: ${sidecar.stderr.slice(-500)})`,
      async () => {
        if (sidecar.process.exitCode !== null) throw new Error(`haproxy-connect for ${service} exited with ${sidecar.process.exitCode}: ${sidecar.stderr}`);
        return sidecar.logs.some((l) => typeof l.raw === 'string' && / main: sidecar ready/.test(l.raw)) ? true : undefined;
      },
      60_000,
      100,
    );
  }

  const url = `http://127.0.0.1:${webToApiPort}/`;
  const body = await waitFor(
    'a reply from api through the mesh',
    async () => {
      const res = await fetch(url);
      return res.ok ? await res.text() : undefined;
    },
    60_000,
    250,
  );
  say(`demo: mesh is up: web's upstream listener reached api over mTLS and answered '${body}'`);
  say('');
  say('Try it:');
  say(`  curl ${url}                       # web's sidecar -> mTLS -> api's sidecar -> api`);
  say(`  curl http://127.0.0.1:${webPort}/                       # the web app, which calls api through the mesh`);
  say(`  CONSUL_HTTP_ADDR=${agent.httpAddr} ${CONSUL_BIN} catalog services`);
  if (checkOnly) return;
  say('');
  say('Press Ctrl-C to stop the demo.');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

try {
  await main();
  await cleanup();
  say('demo: stopped');
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  for (const s of sidecars) process.stderr.write(s.stderr);
  await cleanup();
  process.exitCode = 1;
}
