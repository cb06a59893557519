/**
 * A source and a destination service on the testbed, each with an app and a haproxy-connect
 * sidecar, the source with the destination as an HTTP upstream, and a probe through that upstream:
 * the set-up the control-plane cases on the real Consul agent share.
 */
import { freePorts } from '../../devtools/ports.js';
import { registerMeshService } from '../../devtools/consul-dev-agent.js';
import type { Started } from '../lib/procs.js';
import type { ControlPlaneContext } from './case.js';
import { Probe } from './probe.js';

const SETUP_TIMEOUT_MS = 90_000;

export interface MeshPair {
  probe: Probe;
  /** Public (mTLS) listener ports of the source and destination sidecars. */
  sourcePublicPort: number;
  destinationPublicPort: number;
  close(): Promise<void>;
}

/** Starts `<prefix>-src` → `<prefix>-dst` and resolves once the probe is answered by the destination app. */
export async function startMeshPair(ctx: ControlPlaneContext, prefix: string): Promise<MeshPair> {
  const { testbed, registry } = ctx;
  const { agent } = testbed;
  const [appPort, dstPublic, srcPublic, upstreamPort] = (await freePorts(4)) as [number, number, number, number];
  const src = `${prefix}-src`;
  const dst = `${prefix}-dst`;
  const started: Started[] = [];
  const probe = new Probe(upstreamPort);
  const close = async (): Promise<void> => {
    probe.close();
    for (const s of started.reverse()) await registry.stop(s);
    // Best effort: the agent is stopped with the testbed anyway.
    for (const id of [src, dst]) await agent.put(`/v1/agent/service/deregister/${id}`).catch((err: unknown) => ctx.log(`${prefix}: cleanup: ${String(err)}`));
  };
  try {
    started.push(await testbed.startHaproxyApp(`${dst}-app`, appPort, dst));
    await registerMeshService(agent, { id: dst, name: dst, port: appPort, sidecarPort: dstPublic, protocol: 'http' });
    await registerMeshService(agent, {
      id: src,
      name: src,
      port: appPort,
      sidecarPort: srcPublic,
      protocol: 'http',
      upstreams: [{ destinationName: dst, localBindPort: upstreamPort, protocol: 'http' }],
    });
    started.push(testbed.startHaproxyConnect(`${dst}-sidecar`, dst));
    started.push(testbed.startHaproxyConnect(`${src}-sidecar`, src));
    await probe.until(`${dst} through the mesh`, (b) => b === dst, SETUP_TIMEOUT_MS);
    return { probe, sourcePublicPort: srcPublic, destinationPublicPort: dstPublic, close };
  } catch (err) {
    await close();
    throw err;
  }
}
