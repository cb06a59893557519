/**
 * Control-plane case "endpoint churn", two figures:
 * - endpoint-added: from a catalog write that adds an upstream instance to the first request
 *   served by that instance through haproxy-connect;
 * - endpoint-removed: from the catalog write that removes it to the traffic shift (the first of
 *   CONSECUTIVE_AFTER_REMOVAL answers in a row from the remaining instance; the removed one
 *   answers nothing after it).
 *
 * Set-up: service `ep` with instance ep-1 (app + haproxy-connect sidecar) and a client sidecar
 * `ep-src` with `ep` as an HTTP upstream. Instance ep-2 (app + sidecar) is running and ready, but
 * registered with a critical TTL check, so it is not an endpoint. Each repetition registers one more
 * connect-proxy instance of `ep` pointing at ep-2's ready sidecar (the catalog write), measures from
 * the moment that PUT returns to the first probe request answered by ep-2, then deregisters it and
 * waits until ep-1 alone answers again.
 *
 * Reloads: the source sidecar's HAProxy reloads over the repetitions (its master's reload counter,
 * read before the first and SETTLE_MS after the last), in both results: an endpoint change is a
 * runtime change for the native driver; the Data Plane API cannot add a TLS server at runtime.
 */
import { freePorts, waitFor } from '../../devtools/ports.js';
import { registerMeshService } from '../../devtools/consul-dev-agent.js';
import type { Started } from '../lib/procs.js';
import { masterReloadsBinding } from '../lib/run-dirs.js';
import { summarize, type ControlPlaneCase, type ControlPlaneContext, type ControlPlaneResult } from './case.js';
import { Probe } from './probe.js';

const NAME = 'endpoint-churn';
const ADDED = 'endpoint-added';
const ADDED_DESCRIPTION = 'catalog write (new instance registered) -> first request served by it';
const REMOVED = 'endpoint-removed';
const REMOVED_DESCRIPTION = 'catalog write (instance deregistered) -> last request served by it';
/** Longest a single convergence may take before the case fails. */
const CONVERGENCE_TIMEOUT_MS = 30_000;
/** After a removal, this many ep-1 answers in a row mean ep-2 is out of rotation. */
const CONSECUTIVE_AFTER_REMOVAL = 20;
const SETUP_TIMEOUT_MS = 90_000;
/** Wait before the last reload count: longer than a reload may wait for quiet (src/reconcile/reload-quiet.ts, 1 s at most). */
const SETTLE_MS = 1_500;

async function run(ctx: ControlPlaneContext): Promise<ControlPlaneResult[]> {
  const { testbed, registry } = ctx;
  const { agent } = testbed;
  const [app1Port, app2Port, side1Port, side2Port, srcPublic, upstreamPort] = (await freePorts(6)) as [number, number, number, number, number, number];
  const started: Started[] = [];
  const registered = ['ep-src', 'ep-1', 'ep-2'];
  const probe = new Probe(upstreamPort);
  try {
    started.push(await testbed.startHaproxyApp('ep-app-1', app1Port, 'ep-1'));
    started.push(await testbed.startHaproxyApp('ep-app-2', app2Port, 'ep-2'));
    await registerMeshService(agent, { id: 'ep-1', name: 'ep', port: app1Port, sidecarPort: side1Port, protocol: 'http' });
    await registerMeshService(agent, { id: 'ep-2', name: 'ep', port: app2Port, sidecarPort: side2Port, protocol: 'http', ttlCheck: true });
    await agent.put('/v1/agent/check/fail/ep-2-ttl');
    await registerMeshService(agent, {
      id: 'ep-src',
      name: 'ep-src',
      port: app1Port,
      sidecarPort: srcPublic,
      protocol: 'http',
      upstreams: [{ destinationName: 'ep', localBindPort: upstreamPort, protocol: 'http' }],
    });
    started.push(testbed.startHaproxyConnect('ep-1-sidecar', 'ep-1'));
    started.push(testbed.startHaproxyConnect('ep-2-sidecar', 'ep-2'));
    started.push(testbed.startHaproxyConnect('ep-src-sidecar', 'ep-src'));
    await probe.until('ep-1 through the mesh', (b) => b === 'ep-1', SETUP_TIMEOUT_MS);
    // ep-2's sidecar must be ready (serving mTLS) before any measurement: wait for its listener.
    await waitFor(
      'ep-2 sidecar to listen',
      async () => {
        const res = await fetch(`http://127.0.0.1:${side2Port}/`, { signal: AbortSignal.timeout(1_000) }).catch((e: unknown) => e);
        // Plain HTTP to a TLS listener fails at the protocol level, not with ECONNREFUSED.
        const refused = res instanceof Error && /ECONNREFUSED/.test(String((res as Error & { cause?: unknown }).cause));
        return refused ? undefined : true;
      },
      SETUP_TIMEOUT_MS,
      250,
    );
    const baseline = { requests: probe.requests, failed: probe.failed };
    const reloadsBefore = await masterReloadsBinding(testbed.runBase, srcPublic);

    const samplesMs: number[] = [];
    const removedMs: number[] = [];
    for (let i = 0; i < ctx.repeats; i++) {
      const id = `ep-2-added-${i}`;
      registered.push(id);
      await agent.put('/v1/agent/service/register', {
        ID: id,
        Name: 'ep-sidecar-proxy',
        Kind: 'connect-proxy',
        Address: '127.0.0.1',
        Port: side2Port,
        Proxy: { DestinationServiceName: 'ep', LocalServiceAddress: '127.0.0.1', LocalServicePort: app2Port },
      });
      const written = performance.now();
      const first = await probe.until(`ep-2 to answer after registering ${id}`, (b) => b === 'ep-2', CONVERGENCE_TIMEOUT_MS);
      samplesMs.push(first.at - written);
      await agent.put(`/v1/agent/service/deregister/${id}`);
      const removed = performance.now();
      registered.pop();
      let inARow = 0;
      let streakStart = removed;
      await probe.until(
        `ep-1 alone to answer after deregistering ${id}`,
        (b) => {
          if (b !== 'ep-1') inARow = 0;
          else if (++inARow === 1) streakStart = performance.now();
          return inARow >= CONSECUTIVE_AFTER_REMOVAL;
        },
        CONVERGENCE_TIMEOUT_MS,
      );
      removedMs.push(streakStart - removed);
      ctx.log(`${NAME}: ${i + 1}/${ctx.repeats} added ${samplesMs.at(-1)?.toFixed(1)} ms, removed ${removedMs.at(-1)?.toFixed(1)} ms`);
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const reloads = (await masterReloadsBinding(testbed.runBase, srcPublic)) - reloadsBefore;
    ctx.log(`${NAME}: source sidecar reloads: ${reloads} in ${ctx.repeats} additions and ${ctx.repeats} removals`);
    const requests = probe.requests - baseline.requests;
    const failed = probe.failed - baseline.failed;
    return [
      { ...summarize(ADDED, ADDED_DESCRIPTION, samplesMs, requests, failed), reloads },
      { ...summarize(REMOVED, REMOVED_DESCRIPTION, removedMs, requests, failed), reloads },
    ];
  } finally {
    probe.close();
    for (const s of started.reverse()) await registry.stop(s);
    // Best effort: the agent is stopped with the testbed anyway; a failure here must not hide the case's own error.
    for (const id of registered.reverse()) await agent.put(`/v1/agent/service/deregister/${id}`).catch((err: unknown) => ctx.log(`${NAME}: cleanup: ${String(err)}`));
  }
}

export const endpointChurn: ControlPlaneCase = { name: NAME, produces: [ADDED, REMOVED], run };
