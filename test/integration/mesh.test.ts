/**
 * End to end with a real Consul dev agent and real HAProxy: web → api over mTLS through two
 * haproxy-connect sidecars, refused clients, endpoint health, a TCP upstream, clean shutdown.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startHttpApp, startTcpEcho, type RunningApp } from '../../devtools/apps.js';
import { foreignLeaf } from '../../devtools/certs.js';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { httpGet, tcpExchange, tlsHttpProbe } from '../../devtools/probes.js';
import { descendants, isAlive } from '../../devtools/proc.js';
import { type SidecarProcess, sidecarServing, startReadySidecar } from '../../devtools/sidecar.js';

let agent: ConsulDevAgent;
let baseDir: string;
const apps: RunningApp[] = [];
const sidecars: SidecarProcess[] = [];
let ports: Record<string, number>;
let roots: string;

const startSidecar = (service: string): Promise<SidecarProcess> => startReadySidecar(sidecars, service, agent.httpAddr, baseDir);
const sidecarOf = (service: string): SidecarProcess => sidecarServing(sidecars, service);

/** Collects which app answered over `count` requests through web's api upstream. */
async function answers(count: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const { status, body } = await httpGet(ports.webToApi as number);
    seen.add(status === 200 ? body : `status ${status}`);
  }
  return seen;
}

before(async () => {
  agent = await ConsulDevAgent.start();
  baseDir = await mkdtemp(join(tmpdir(), 'hc-mesh-'));
  const names = ['api1', 'api1Sidecar', 'api2', 'api2Sidecar', 'web', 'webSidecar', 'webToApi', 'echo', 'echoSidecar', 'webToEcho', 'billing', 'billingSidecar'];
  const list = await freePorts(names.length);
  ports = Object.fromEntries(names.map((n, i) => [n, list[i] as number]));
  apps.push(await startHttpApp('api-1', ports.api1 as number));
  apps.push(await startTcpEcho('echo', ports.echo as number));
  await registerMeshService(agent, { id: 'api-1', name: 'api', port: ports.api1 as number, sidecarPort: ports.api1Sidecar as number, protocol: 'http', ttlCheck: true });
  await registerMeshService(agent, { id: 'echo', name: 'echo', port: ports.echo as number, sidecarPort: ports.echoSidecar as number });
  await registerMeshService(agent, {
    id: 'web',
    name: 'web',
    port: ports.web as number,
    sidecarPort: ports.webSidecar as number,
    protocol: 'http',
    upstreams: [
      { destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' },
      { destinationName: 'echo', localBindPort: ports.webToEcho as number },
    ],
  });
  await Promise.all(['api-1', 'echo', 'web'].map((s) => startSidecar(s)));
  const rootsJson = await agent.get<{ Roots: Array<{ RootCert: string }> }>('/v1/agent/connect/ca/roots');
  roots = rootsJson.Roots.map((r) => r.RootCert).join('\n');
});

after(async () => {
  await Promise.all(sidecars.map((s) => s.stop()));
  await Promise.all(apps.map((a) => a.close()));
  await agent?.stop();
  if (baseDir !== undefined) await rm(baseDir, { recursive: true, force: true });
});

describe('mesh with real Consul and HAProxy', () => {
  test('a request to the upstream port reaches the target app over mTLS', async () => {
    const body = await waitFor(
      'api-1 through the mesh',
      async () => {
        const res = await httpGet(ports.webToApi as number);
        return res.status === 200 ? res.body : undefined;
      },
      30_000,
      200,
    );
    assert.equal(body, 'hello from api-1');
  });

  test('the public listener serves the leaf and requires a client certificate from the Consul CA', async () => {
    const leaf = await agent.get<{ CertPEM: string; PrivateKeyPEM: string }>('/v1/agent/connect/ca/leaf/web');
    const accepted = await tlsHttpProbe({ port: ports.api1Sidecar as number, ca: roots, cert: leaf.CertPEM, key: leaf.PrivateKeyPEM });
    assert.match(accepted, /^HTTP\/1\.1 200/);
    assert.match(accepted, /\r\nhello from api-1\r\n/);

    const noCert = await tlsHttpProbe({ port: ports.api1Sidecar as number, ca: roots });
    assert.match(noCert, /^refused: /, `a client without a certificate got: ${noCert}`);

    const foreign = foreignLeaf('web');
    const otherCa = await tlsHttpProbe({ port: ports.api1Sidecar as number, ca: roots, cert: foreign.certPem, key: foreign.keyPem });
    assert.match(otherCa, /^refused: /, `a client with a foreign CA's certificate got: ${otherCa}`);
  });

  test('a TCP upstream works', async () => {
    const result = await waitFor('echo through the mesh', () => tcpExchange(ports.webToEcho as number, 'ping over mtls'), 30_000, 200);
    assert.deepEqual(result, { greeting: 'echo', echo: 'ping over mtls' });
  });

  test("an api instance that presents another service's mesh certificate gets no answer through: 502, never the other service's response", async () => {
    // billing is a real mesh service with its own sidecar and a valid leaf from the same CA.
    apps.push(await startHttpApp('billing', ports.billing as number));
    await registerMeshService(agent, { id: 'billing', name: 'billing', port: ports.billing as number, sidecarPort: ports.billingSidecar as number, protocol: 'http' });
    await startSidecar('billing');
    // An instance of api whose address is billing's sidecar (a mistake, or an attack through the catalog).
    await agent.put('/v1/agent/service/register', {
      ID: 'api-impostor-sidecar-proxy',
      Name: 'api-sidecar-proxy',
      Kind: 'connect-proxy',
      Port: ports.billingSidecar,
      Address: '127.0.0.1',
      Proxy: { DestinationServiceName: 'api', DestinationServiceID: 'api-1', LocalServicePort: ports.api1 },
    });
    try {
      const seen = await waitFor(
        'requests to reach the impostor',
        async () => {
          const got = await answers(20);
          return got.has('status 502') ? got : undefined;
        },
        30_000,
        200,
      );
      assert.ok(!seen.has('hello from billing'), `billing answered as api: ${[...seen].join(', ')}`);
      assert.ok(seen.has('hello from api-1'), 'the real instance keeps answering');
      const more = await answers(40);
      assert.ok(!more.has('hello from billing'), `billing answered as api: ${[...more].join(', ')}`);
    } finally {
      await agent.put('/v1/agent/service/deregister/api-impostor-sidecar-proxy');
    }
    await waitFor('the impostor to leave', async () => ((await answers(10)).has('status 502') ? undefined : true), 30_000, 200);
  });

  test('a second instance that registers starts receiving traffic', async () => {
    apps.push(await startHttpApp('api-2', ports.api2 as number));
    await registerMeshService(agent, { id: 'api-2', name: 'api', port: ports.api2 as number, sidecarPort: ports.api2Sidecar as number, protocol: 'http', ttlCheck: true });
    await startSidecar('api-2');
    await waitFor('api-2 to receive traffic', async () => ((await answers(4)).has('hello from api-2') ? true : undefined), 30_000, 200);
    const seen = await answers(10);
    assert.deepEqual([...seen].sort(), ['hello from api-1', 'hello from api-2']);
  });

  test('an instance whose check turns critical stops receiving traffic', async () => {
    await agent.put('/v1/agent/check/fail/api-1-ttl?note=test');
    await waitFor(
      'api-1 to leave the load balancing',
      async () => {
        const seen = await answers(6);
        return seen.size === 1 && seen.has('hello from api-2') ? true : undefined;
      },
      30_000,
      200,
    );
    assert.deepEqual([...(await answers(20))], ['hello from api-2']);
    await agent.put('/v1/agent/check/pass/api-1-ttl');
    await waitFor('api-1 to come back', async () => ((await answers(6)).has('hello from api-1') ? true : undefined), 30_000, 200);
  });

  test('a bad registration update is logged and the last good configuration keeps serving', async () => {
    const web = sidecarOf('web');
    const webSpec = {
      id: 'web',
      name: 'web',
      port: ports.web as number,
      sidecarPort: ports.webSidecar as number,
      protocol: 'http',
      upstreams: [
        { destinationName: 'api', localBindPort: ports.webToApi as number, protocol: 'http' },
        { destinationName: 'echo', localBindPort: ports.webToEcho as number },
      ],
    };
    await registerMeshService(agent, { ...webSpec, proxyConfig: { local_connect_timeout_ms: 'soon' } });
    const failure = await waitFor('the bad update to be logged', async () =>
      web.logs.find((l) => l.msg === 'watch failed; keeping the last good value and retrying' && l.code === 'PROXY_CONFIG_INVALID'),
    );
    assert.match(String(failure.err), /local_connect_timeout_ms.*'soon'/);
    assert.equal((await httpGet(ports.webToApi as number)).status, 200);
    assert.equal(web.process.exitCode, null);
    await registerMeshService(agent, webSpec);
  });

  test('haproxy is restarted when it dies', async () => {
    const web = sidecarOf('web');
    const [master] = descendants(web.pid);
    assert.ok(master !== undefined);
    process.kill(master, 'SIGKILL');
    await waitFor(
      'traffic through a restarted haproxy',
      async () => {
        const restarted = descendants(web.pid).length > 0 && !descendants(web.pid).includes(master);
        return restarted && (await httpGet(ports.webToApi as number)).status === 200 ? true : undefined;
      },
      30_000,
      200,
    );
  });

  test('SIGTERM stops haproxy-connect with exit 0 and leaves no haproxy process or run directory behind', async () => {
    const sidecar = sidecarOf('echo');
    const runDir = sidecar.find('created run directory')?.runDir as string;
    assert.ok(existsSync(runDir));
    const children = descendants(sidecar.pid);
    assert.ok(children.length >= 2, `expected an haproxy master and worker under ${sidecar.pid}, found ${children.join(',')}`);
    const { code } = await sidecar.stop();
    assert.equal(code, 0, sidecar.stderr);
    await waitFor('haproxy processes to be gone', async () => (children.every((pid) => !isAlive(pid)) ? true : undefined), 5_000);
    assert.equal(existsSync(runDir), false, `run directory ${runDir} left behind`);
  });
});
