/**
 * The system under test: one Consul dev agent, one backend app, and every path the benchmark
 * measures, all started once, pinned to the SUT core, and torn down by pid at the end.
 *
 *   direct          client -> app
 *   reference-http  client -> haproxy A -> mTLS (http-reuse always) -> haproxy B -> app
 *   reference-tcp   the same chain in TCP mode
 *   consul-proxy    client -> `consul connect proxy` (upstream) -> mTLS -> `consul connect proxy` -> app
 *                   (Consul's built-in proxy is L4 only: TCP in every workload)
 *   hc-http         client -> haproxy-connect (upstream, protocol http) -> mTLS -> haproxy-connect -> app
 *   hc-tcp          the same with protocol tcp on both ends
 *   hc-tcp-no-intentions  hc-tcp with intentions off at the destination (what authorization costs)
 *   hc-http-no-intentions  hc-http with intentions off at the destination: no SPOE filter on its
 *                   streams, which in HTTP mode are one per request (in TCP mode one per connection)
 *   hc-http-routed  hc-http with a 10-route service-router in front of its destination, whose first
 *                   nine routes no benchmark request matches (lib/routed-path.ts): what routing costs.
 *                   Its destination is its own service (`hc-dst-routed`, service-defaults Protocol
 *                   http, the router written before the sidecars start), so hc-http stays unrouted.
 *   hc-http-l7      hc-http to a destination whose intentions give the source an L7 intention: five
 *                   permissions rendered as an ACL chain, the last of which allows the benchmark's
 *                   requests (lib/l7-path.ts): what L7 intentions cost when HAProxy decides them.
 *   hc-http-l7-agent  the same with a policy the compiler leaves to the agent (a comma-valued header
 *                   Exact as an earlier permission): every request is a SPOP round trip to the daemon.
 *                   Both destinations are their own services (`hc-dst-l7`, `hc-dst-l7-agent`, with
 *                   service-defaults Protocol http and the intentions written before the sidecars
 *                   start); after the paths answer, a request the policies deny must get the 403 and
 *                   the destinations' haproxy.cfg must render the policy (resp. leave it to the agent).
 *
 * Every haproxy-connect destination also has a `destination daemon` component: the daemon's own
 * process (no HAProxy), whose CPU per request is the agent's share of the destination sidecar's.
 *
 * The app is HAProxy itself answering a fixed `200 ok` (`http-request return`), not a Node server:
 * it is a few µs of C per request in one thread with no GC pauses, so it neither caps the paths'
 * throughput nor adds tail latency of its own, and the differences between paths are the proxies.
 * It is the same binary the paths use, so nothing extra is installed.
 *
 * haproxy-connect runs from a private copy of dist/ when dist/ is at least as new as every file of
 * src/, and from source (tsx) otherwise: a stale build would measure code that is no longer there.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConsulDevAgent, CONSUL_BIN, REPO_ROOT, registerMeshService } from '../devtools/consul-dev-agent.js';
import { daemonNode } from '../devtools/daemon-node.js';
import { freePorts, waitFor } from '../devtools/ports.js';
import { appConfig, checkConfig, HAPROXY_BIN, referenceHopA, referenceHopB, writeCertificates, type ReferencePorts } from './lib/haproxy-fixtures.js';
import { assertRunning, type ProcessRegistry, type Started } from './lib/procs.js';
import { processTree } from './lib/proc-stats.js';
import { AGENT_L7_PERMISSIONS, DENIED_PATH, RENDERED_L7_PERMISSIONS, renderedL7, serviceIntentions, type RenderedL7 } from './lib/l7-path.js';
import { ROUTED_PATH_ROUTES, routedPathRouter, routeRulesOfFrontend } from './lib/routed-path.js';
import { runDirBinding } from './lib/run-dirs.js';

/** How long a path may take to answer after its processes started (Consul health checks run every 1 s). */
const PATH_READY_TIMEOUT_MS = 90_000;
/** Output of each process quoted when a path does not come up. */
const OUTPUT_IN_ERRORS_CHARS = 1_500;

export interface Component {
  /** `source sidecar`, `destination sidecar`, `app`. */
  role: string;
  rootPid: number;
  /** The live processes of the component (a daemon with its HAProxy master and worker). */
  pids(): number[];
}

export interface PathUnderTest {
  name: string;
  description: string;
  url: string;
  /** Components that take part in this path; the app is in every one. */
  components: Component[];
}

export interface Testbed {
  agent: ConsulDevAgent;
  workDir: string;
  /** Where the haproxy-connect daemons create their run directories. */
  runBase: string;
  appPort: number;
  paths: PathUnderTest[];
  /** How haproxy-connect is run: `dist` (built) or `tsx` (from source). */
  daemonFrom: 'dist' | 'tsx';
  /** `nodeFlags` come after the bin's own (its shebang's), e.g. a V8 mode to compare. */
  startHaproxyConnect(name: string, serviceId: string, extraArgs?: readonly string[], nodeFlags?: readonly string[]): Started;
  startHaproxyApp(name: string, port: number, body: string): Promise<Started>;
  stop(): Promise<void>;
}

/** Newest modification time (ms) of any file under `dir`. */
function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/** dist/cli.js exists and is no older than any file of src/. */
function distIsCurrent(): boolean {
  const cli = join(REPO_ROOT, 'dist/cli.js');
  return existsSync(cli) && statSync(cli).mtimeMs >= newestMtimeMs(join(REPO_ROOT, 'src'));
}

/** Route-selection rules of the frontend bound to `port` in any sidecar's haproxy.cfg under `runBase` (0: none found yet). */
function routeRulesUnder(runBase: string, port: number): number {
  let found = 0;
  for (const dir of readdirSync(runBase)) {
    const cfg = join(runBase, dir, 'haproxy.cfg');
    if (existsSync(cfg)) found = Math.max(found, routeRulesOfFrontend(readFileSync(cfg, 'utf8'), port) ?? 0);
  }
  return found;
}

/** `N` ports, as freePorts(N) returns them. */
type PortTuple<N extends number, T extends number[] = []> = T['length'] extends N ? T : PortTuple<N, [...T, number]>;

function single(role: string, started: Started): Component {
  return { role, rootPid: started.pid, pids: () => [started.pid] };
}

function tree(role: string, started: Started): Component {
  return { role, rootPid: started.pid, pids: () => processTree(started.pid) };
}

/** A haproxy-connect destination: the whole sidecar (daemon + HAProxy), and its daemon alone. */
function destination(started: Started): Component[] {
  return [tree('destination sidecar', started), single('destination daemon', started)];
}

/** The L7 rules rendered by the sidecar whose public listener is `port` (undefined until its haproxy.cfg exists). */
function renderedL7At(runBase: string, port: number): RenderedL7 | undefined {
  const dir = runDirBinding(runBase, port);
  return dir === undefined ? undefined : renderedL7(readFileSync(join(dir, 'haproxy.cfg'), 'utf8'));
}

/** `GET url`: status and body (the L7 paths' denial check). */
async function statusOf(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  return { status: res.status, body: await res.text() };
}

/**
 * Starts everything and waits until every path answers. On failure or abort it stops what it had
 * started before rejecting, so the caller owns nothing until this resolves.
 */
export async function startTestbed(registry: ProcessRegistry, sutCore: number, signal: AbortSignal): Promise<Testbed> {
  const workDir = mkdtempSync(join(tmpdir(), 'haproxy-connect-bench-'));
  const runBase = join(workDir, 'run');
  // A private copy of the build, so every daemon of this run is the same code even if dist/ is
  // rebuilt meanwhile. Inside the repository, so node_modules and package.json still resolve.
  const snapshotDir = join(REPO_ROOT, '.deps', `bench-dist-${process.pid}`);
  const daemonFrom = distIsCurrent() ? 'dist' : 'tsx';
  if (daemonFrom === 'dist') {
    cpSync(join(REPO_ROOT, 'dist'), join(snapshotDir, 'dist'), { recursive: true });
    cpSync(join(REPO_ROOT, 'package.json'), join(snapshotDir, 'package.json'));
  }
  const distCli = join(snapshotDir, 'dist/cli.js');
  let agent: ConsulDevAgent | undefined;

  const startHaproxy = async (name: string, config: string): Promise<Started> => {
    const file = join(workDir, `${name}.cfg`);
    writeFileSync(file, config);
    checkConfig(file);
    return registry.start(name, sutCore, HAPROXY_BIN, ['-db', '-f', file]);
  };
  const startHaproxyApp = (name: string, port: number, body: string): Promise<Started> => startHaproxy(name, appConfig(port, body));
  const startHaproxyConnect = (name: string, serviceId: string, extraArgs: readonly string[] = [], nodeFlags: readonly string[] = []): Started => {
    if (agent === undefined) throw new Error('the Consul agent is not running');
    const cli = daemonFrom === 'dist' ? [distCli] : ['--import', 'tsx', join(REPO_ROOT, 'src/cli.ts')];
    // The bin's own Node flags and environment (its shebang line), as users run it.
    const node = daemonNode();
    return registry.start(
      name,
      sutCore,
      process.execPath,
      [...node.args, ...nodeFlags, ...cli, '-sidecar-for', serviceId, '-http-addr', agent.httpAddr, '-haproxy', HAPROXY_BIN, '-haproxy-cfg-base-path', runBase, '-log-level', 'warn', ...extraArgs],
      node.env,
    );
  };

  const stop = async (): Promise<void> => {
    await registry.stopAll();
    await agent?.stop();
    rmSync(workDir, { recursive: true, force: true });
    rmSync(snapshotDir, { recursive: true, force: true });
  };

  try {
    mkdirSync(runBase, { mode: 0o700 });

    // One agent serves every sidecar of the testbed (a dozen daemons and the cases' own, each holding its blocking
    // queries open) from one address: above Consul's default of 200 connections per client address,
    // which is sized for a node's agent and its own sidecars (a CI run got 429 registering a service).
    agent = await ConsulDevAgent.start({ extraConfig: 'limits { http_max_conns_per_client = 1000 }' });
    if (agent.process.pid !== undefined) registry.pin(agent.process.pid, sutCore);
    signal.throwIfAborted();

    const [
      appPort,
      refHttpEntry,
      refHttpMtls,
      refTcpEntry,
      refTcpMtls,
      cpSrcPublic,
      cpDstPublic,
      cpUpstream,
      hcSrcPublic,
      hcDstHttpPublic,
      hcDstTcpPublic,
      hcHttpUpstream,
      hcTcpUpstream,
      hcDstOpenPublic,
      hcOpenUpstream,
      hcDstRoutedPublic,
      hcRoutedUpstream,
      hcDstL7Public,
      hcL7Upstream,
      hcDstL7AgentPublic,
      hcL7AgentUpstream,
      hcDstOpenHttpPublic,
      hcOpenHttpUpstream,
    ] = (await freePorts(23)) as PortTuple<23>;

    const app = await startHaproxyApp('app', appPort, 'ok');
    const certs = writeCertificates(workDir);
    const refHttp: ReferencePorts = { entry: refHttpEntry, mtls: refHttpMtls, app: appPort };
    const refTcp: ReferencePorts = { entry: refTcpEntry, mtls: refTcpMtls, app: appPort };
    const refHttpB = await startHaproxy('reference-http-b', referenceHopB('http', refHttp, certs));
    const refHttpA = await startHaproxy('reference-http-a', referenceHopA('http', refHttp, certs));
    const refTcpB = await startHaproxy('reference-tcp-b', referenceHopB('tcp', refTcp, certs));
    const refTcpA = await startHaproxy('reference-tcp-a', referenceHopA('tcp', refTcp, certs));

    // Consul's built-in proxy pair (protocol tcp: it has no L7 mode).
    await registerMeshService(agent, { id: 'cp-dst', name: 'cp-dst', port: appPort, sidecarPort: cpDstPublic });
    await registerMeshService(agent, {
      id: 'cp-src',
      name: 'cp-src',
      port: appPort,
      sidecarPort: cpSrcPublic,
      upstreams: [{ destinationName: 'cp-dst', localBindPort: cpUpstream }],
    });
    const consulEnv = { CONSUL_HTTP_ADDR: agent.httpAddr };
    const cpDst = registry.start('consul-proxy-dst', sutCore, CONSUL_BIN, ['connect', 'proxy', '-sidecar-for', 'cp-dst', '-log-level', 'warn'], consulEnv);
    const cpSrc = registry.start('consul-proxy-src', sutCore, CONSUL_BIN, ['connect', 'proxy', '-sidecar-for', 'cp-src', '-log-level', 'warn'], consulEnv);

    // haproxy-connect: one source sidecar with HTTP, TCP and routed HTTP upstreams, one destination each.
    // The routed destination's chain needs Protocol http in service-defaults, and its router must be
    // in place before the source sidecar starts, so its first configuration is already routed.
    await agent.put('/v1/config', { Kind: 'service-defaults', Name: 'hc-dst-routed', Protocol: 'http' });
    await agent.put('/v1/config', routedPathRouter('hc-dst-routed'));
    await registerMeshService(agent, { id: 'hc-dst-routed', name: 'hc-dst-routed', port: appPort, sidecarPort: hcDstRoutedPublic, protocol: 'http' });
    // The L7 destinations: Consul takes L7 intentions only for a destination whose protocol is HTTP.
    for (const [name, permissions, sidecarPort] of [
      ['hc-dst-l7', RENDERED_L7_PERMISSIONS, hcDstL7Public],
      ['hc-dst-l7-agent', AGENT_L7_PERMISSIONS, hcDstL7AgentPublic],
    ] as const) {
      await agent.put('/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
      await agent.put('/v1/config', serviceIntentions(name, [{ Name: 'hc-src', Permissions: [...permissions] }]));
      await registerMeshService(agent, { id: name, name, port: appPort, sidecarPort, protocol: 'http' });
    }
    await registerMeshService(agent, { id: 'hc-dst-http', name: 'hc-dst-http', port: appPort, sidecarPort: hcDstHttpPublic, protocol: 'http' });
    await registerMeshService(agent, { id: 'hc-dst-tcp', name: 'hc-dst-tcp', port: appPort, sidecarPort: hcDstTcpPublic, protocol: 'tcp' });
    await registerMeshService(agent, { id: 'hc-dst-open', name: 'hc-dst-open', port: appPort, sidecarPort: hcDstOpenPublic, protocol: 'tcp' });
    await registerMeshService(agent, { id: 'hc-dst-open-http', name: 'hc-dst-open-http', port: appPort, sidecarPort: hcDstOpenHttpPublic, protocol: 'http' });
    await registerMeshService(agent, {
      id: 'hc-src',
      name: 'hc-src',
      port: appPort,
      sidecarPort: hcSrcPublic,
      protocol: 'http',
      upstreams: [
        { destinationName: 'hc-dst-http', localBindPort: hcHttpUpstream, protocol: 'http' },
        { destinationName: 'hc-dst-tcp', localBindPort: hcTcpUpstream, protocol: 'tcp' },
        { destinationName: 'hc-dst-open', localBindPort: hcOpenUpstream, protocol: 'tcp' },
        { destinationName: 'hc-dst-open-http', localBindPort: hcOpenHttpUpstream, protocol: 'http' },
        { destinationName: 'hc-dst-routed', localBindPort: hcRoutedUpstream, protocol: 'http' },
        { destinationName: 'hc-dst-l7', localBindPort: hcL7Upstream, protocol: 'http' },
        { destinationName: 'hc-dst-l7-agent', localBindPort: hcL7AgentUpstream, protocol: 'http' },
      ],
    });
    signal.throwIfAborted();
    const hcDstHttp = startHaproxyConnect('hc-dst-http', 'hc-dst-http');
    const hcDstTcp = startHaproxyConnect('hc-dst-tcp', 'hc-dst-tcp');
    // The same destination with intentions off: the difference is what authorization costs.
    const hcDstOpen = startHaproxyConnect('hc-dst-open', 'hc-dst-open', ['-enable-intentions=false']);
    const hcDstOpenHttp = startHaproxyConnect('hc-dst-open-http', 'hc-dst-open-http', ['-enable-intentions=false']);
    const hcDstRouted = startHaproxyConnect('hc-dst-routed', 'hc-dst-routed');
    const hcDstL7 = startHaproxyConnect('hc-dst-l7', 'hc-dst-l7');
    const hcDstL7Agent = startHaproxyConnect('hc-dst-l7-agent', 'hc-dst-l7-agent');
    const hcSrc = startHaproxyConnect('hc-src', 'hc-src');

    const appComponent = single('app', app);
    const url = (port: number): string => `http://127.0.0.1:${port}/`;
    const paths: PathUnderTest[] = [
      { name: 'direct', description: 'client -> app', url: url(appPort), components: [appComponent] },
      {
        name: 'reference-http',
        description: 'hand-written HAProxy pair, HTTP mode, mTLS, http-reuse always',
        url: url(refHttpEntry),
        components: [single('source sidecar', refHttpA), single('destination sidecar', refHttpB), appComponent],
      },
      {
        name: 'reference-tcp',
        description: 'hand-written HAProxy pair, TCP mode, mTLS',
        url: url(refTcpEntry),
        components: [single('source sidecar', refTcpA), single('destination sidecar', refTcpB), appComponent],
      },
      {
        name: 'consul-proxy',
        description: "Consul's built-in proxy pair (L4)",
        url: url(cpUpstream),
        components: [single('source sidecar', cpSrc), single('destination sidecar', cpDst), appComponent],
      },
      {
        name: 'hc-http',
        description: 'haproxy-connect pair, protocol http',
        url: url(hcHttpUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstHttp), appComponent],
      },
      {
        name: 'hc-http-l7',
        description: 'hc-http with an L7 intention for the source (5 permissions rendered as an ACL chain; the last allows the request)',
        url: url(hcL7Upstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstL7), appComponent],
      },
      {
        name: 'hc-http-l7-agent',
        description: 'hc-http-l7 with a policy left to the agent (a comma-valued header Exact as 2nd permission): a SPOP round trip per request',
        url: url(hcL7AgentUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstL7Agent), appComponent],
      },
      {
        name: 'hc-http-routed',
        description: `hc-http behind a ${ROUTED_PATH_ROUTES}-route service-router (9 routes that do not match, then the catch-all)`,
        url: url(hcRoutedUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstRouted), appComponent],
      },
      {
        name: 'hc-tcp',
        description: 'haproxy-connect pair, protocol tcp',
        url: url(hcTcpUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstTcp), appComponent],
      },
      {
        name: 'hc-tcp-no-intentions',
        description: 'haproxy-connect pair, protocol tcp, intentions off at the destination',
        url: url(hcOpenUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstOpen), appComponent],
      },
      {
        name: 'hc-http-no-intentions',
        description: 'haproxy-connect pair, protocol http, intentions off at the destination (no SPOE filter on its streams)',
        url: url(hcOpenHttpUpstream),
        components: [tree('source sidecar', hcSrc), ...destination(hcDstOpenHttp), appComponent],
      },
    ];
    const everyProcess = [app, refHttpA, refHttpB, refTcpA, refTcpB, cpSrc, cpDst, hcSrc, hcDstHttp, hcDstTcp, hcDstOpen, hcDstOpenHttp, hcDstRouted, hcDstL7, hcDstL7Agent];
    // Fail at once, with its output, when a process dies while the paths come up.
    const died = Promise.race(everyProcess.map((started) => started.exited.then(() => started))).then((started) => {
      assertRunning(started);
      throw new Error(`${started.name} exited`);
    });
    died.catch(() => undefined); // raced below; a late exit is caught by the workloads' errors
    const aborted = new Promise<never>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    aborted.catch(() => undefined); // raced below
    for (const path of paths) {
      try {
        await Promise.race([
          died,
          aborted,
          waitFor(
            `path ${path.name} (${path.url}) to answer 200`,
            async () => {
              const res = await fetch(path.url, { signal: AbortSignal.timeout(2_000) });
              await res.text();
              return res.status === 200 ? true : undefined;
            },
            PATH_READY_TIMEOUT_MS,
            250,
          ),
        ]);
      } catch (err) {
        const outputs = everyProcess.filter((p) => p.output() !== '').map((p) => `--- ${p.name} (pid ${p.pid}):\n${p.output().slice(-OUTPUT_IN_ERRORS_CHARS)}`);
        throw new Error([err instanceof Error ? err.message : String(err), ...outputs].join('\n'));
      }
    }
    // The routed path must really be routed (and hc-http not): read the source sidecar's rules.
    const routeRules = await waitFor(
      `the source sidecar to render the ${ROUTED_PATH_ROUTES} routes of hc-dst-routed`,
      async () => {
        const n = routeRulesUnder(runBase, hcRoutedUpstream);
        return n >= ROUTED_PATH_ROUTES ? n : undefined;
      },
      10_000,
      100,
    );
    const unroutedRules = routeRulesUnder(runBase, hcHttpUpstream);
    if (unroutedRules > 0) throw new Error(`hc-http is routed too (${unroutedRules} route rules): it must stay the unrouted baseline`);
    const routed = paths.find((p) => p.name === 'hc-http-routed');
    if (routed !== undefined) routed.description += `; ${routeRules} route rules rendered`;
    // The L7 paths must really be decided by L7 rules: a request their policies deny gets Envoy's 403,
    // and the rendered path's destination renders its policy while the agent path's renders none.
    for (const [name, port, renderedPolicies] of [
      ['hc-http-l7', hcDstL7Public, 1],
      ['hc-http-l7-agent', hcDstL7AgentPublic, 0],
    ] as const) {
      const path = paths.find((p) => p.name === name);
      if (path === undefined) continue;
      const denied = await statusOf(new URL(DENIED_PATH, path.url).href);
      if (denied.status !== 403 || denied.body !== 'RBAC: access denied')
        throw new Error(`${name}: GET ${DENIED_PATH} answered ${denied.status} '${denied.body.slice(0, 100)}', expected the L7 policy's 403`);
      const rendered = await waitFor(`the destination of ${name} to render its L7 rules`, async () => renderedL7At(runBase, port), 10_000, 100);
      if (rendered.policies.length !== renderedPolicies || rendered.agentRules === 0) {
        throw new Error(`${name}: its destination renders ${rendered.policies.length} L7 policies (expected ${renderedPolicies}) and ${rendered.agentRules} send-spoe-group rules`);
      }
      path.description += renderedPolicies > 0 ? `; ${rendered.acls} ACLs, ${rendered.chainRules} chain rules rendered` : '; no policy rendered';
    }
    return { agent, workDir, runBase, appPort, paths, daemonFrom, startHaproxyConnect, startHaproxyApp, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
