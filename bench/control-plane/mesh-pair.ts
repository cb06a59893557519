/**
 * A source and a destination service on the testbed, each with an app and a haproxy-connect
 * sidecar, the source with the destination as an HTTP upstream, and a probe through that upstream:
 * the set-up the control-plane cases on the real Consul agent share.
 */
import { freePorts } from '../../devtools/ports.js';
import { registerMeshService, registerMeshServiceWithMeta } from '../../devtools/consul-dev-agent.js';
import type { Started } from '../lib/procs.js';
import type { ControlPlaneContext } from './case.js';
import { Probe } from './probe.js';

const SETUP_TIMEOUT_MS = 90_000;

export interface MeshPair {
  probe: Probe;
  /** Public (mTLS) listener ports of the source and destination sidecars. */
  sourcePublicPort: number;
  destinationPublicPort: number;
  /** The source sidecar's upstream listener (the probe's port), for more probes. */
  upstreamPort: number;
  /** Service names: `<prefix>-src`, `<prefix>-dst`. */
  source: string;
  destination: string;
  /** The destination's haproxy-connect daemon (its pid is the daemon's; HAProxy runs below it). */
  destinationSidecar: Started;
  /** The destination sidecar's Prometheus text; throws unless started with `destinationMetrics`. */
  destinationMetrics(): Promise<string>;
  close(): Promise<void>;
}

export interface MeshPairOptions {
  /**
   * The destination gets a `service-defaults` entry with Protocol http before anything is
   * registered (Consul takes L7 intentions only for an HTTP destination); `close` deletes it and
   * the destination's `service-intentions` entry.
   */
  httpDefaults?: boolean;
  /** The destination sidecar serves its metrics (`-stats-addr`) on loopback. */
  destinationMetrics?: boolean;
}

/** Starts `<prefix>-src` → `<prefix>-dst` and resolves once the probe is answered by the destination app. */
export async function startMeshPair(ctx: ControlPlaneContext, prefix: string, options: MeshPairOptions = {}): Promise<MeshPair> {
  const { testbed, registry } = ctx;
  const { agent } = testbed;
  const [appPort, dstPublic, srcPublic, upstreamPort, dstStats] = (await freePorts(5)) as [number, number, number, number, number];
  const src = `${prefix}-src`;
  const dst = `${prefix}-dst`;
  const started: Started[] = [];
  const probe = new Probe(upstreamPort);
  let defaultsWritten = false;
  const close = async (): Promise<void> => {
    probe.close();
    for (const s of started.reverse()) await registry.stop(s);
    // Best effort: the agent is stopped with the testbed anyway.
    for (const id of [src, dst]) await agent.put(`/v1/agent/service/deregister/${id}`).catch((err: unknown) => ctx.log(`${prefix}: cleanup: ${String(err)}`));
    if (defaultsWritten) {
      // The intentions first: Consul refuses to drop the protocol under L7 intentions.
      const res = await agent.fetch(`/v1/config/service-intentions/${dst}`, { method: 'DELETE' }).catch(() => undefined);
      if (res !== undefined && !res.ok && res.status !== 404) ctx.log(`${prefix}: cleanup: DELETE service-intentions/${dst}: ${res.status}`);
      await deleteConfigEntry(ctx, 'service-defaults', dst).catch((err: unknown) => ctx.log(`${prefix}: cleanup: ${String(err)}`));
    }
  };
  try {
    if (options.httpDefaults === true) {
      await agent.put('/v1/config', { Kind: 'service-defaults', Name: dst, Protocol: 'http' });
      defaultsWritten = true;
    }
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
    const destinationSidecar = testbed.startHaproxyConnect(`${dst}-sidecar`, dst, options.destinationMetrics === true ? ['-stats-addr', `127.0.0.1:${dstStats}`] : []);
    started.push(destinationSidecar);
    started.push(testbed.startHaproxyConnect(`${src}-sidecar`, src));
    await probe.until(`${dst} through the mesh`, (b) => b === dst, SETUP_TIMEOUT_MS);
    const destinationMetrics = async (): Promise<string> => {
      if (options.destinationMetrics !== true) throw new Error(`${dst} sidecar was started without -stats-addr`);
      const res = await fetch(`http://127.0.0.1:${dstStats}/metrics`, { signal: AbortSignal.timeout(10_000) });
      const text = await res.text();
      if (!res.ok) throw new Error(`${dst} sidecar /metrics answered ${res.status}: ${text.slice(0, 200)}`);
      return text;
    };
    return { probe, sourcePublicPort: srcPublic, destinationPublicPort: dstPublic, upstreamPort, source: src, destination: dst, destinationSidecar, destinationMetrics, close };
  } catch (err) {
    await close();
    throw err;
  }
}

export interface VersionedMeshPair {
  probe: Probe;
  /** The destination service's name (`<prefix>-dst`): the name of its config entries. */
  destination: string;
  /** What the app of each version answers: `<prefix>-dst-<version>`. */
  bodyOf(version: string): string;
  /** The source sidecar's Prometheus text (`-stats-addr` /metrics): its reload and runtime-change counters. */
  sourceMetrics(): Promise<string>;
  /** The source sidecar's last output (warnings and errors), for a failure's message. */
  sourceOutput(): string;
  close(): Promise<void>;
}

/**
 * The variant of `startMeshPair` with one destination instance per version: `<prefix>-src` →
 * `<prefix>-dst`, whose instance `<prefix>-dst-<version>` (app answering `<prefix>-dst-<version>`,
 * and its own sidecar) is registered with Meta `version=<version>`, which its sidecar inherits, so
 * service-resolver subsets can select it. The destination gets a `service-defaults` entry with
 * Protocol http before anything is registered (Consul refuses a chain with mixed protocols), and
 * `close` deletes it. The source sidecar serves its metrics (`-stats-addr`) on loopback, so a case
 * can count its reloads. Resolves once every version answered through the source's upstream (no
 * resolver yet: round robin over all instances), so every sidecar is serving.
 */
export async function startVersionedMeshPair(ctx: ControlPlaneContext, prefix: string, versions: readonly string[]): Promise<VersionedMeshPair> {
  const { testbed, registry } = ctx;
  const { agent } = testbed;
  const ports = await freePorts(3 + 2 * versions.length);
  const [srcPublic, upstreamPort, srcStats] = ports as [number, number, number];
  const src = `${prefix}-src`;
  const dst = `${prefix}-dst`;
  const instanceOf = (version: string): string => `${dst}-${version}`;
  const started: Started[] = [];
  const registered: string[] = [];
  let defaultsWritten = false;
  const probe = new Probe(upstreamPort);
  const close = async (): Promise<void> => {
    probe.close();
    for (const s of started.reverse()) await registry.stop(s);
    // Best effort: the agent is stopped with the testbed anyway.
    for (const id of registered.reverse()) await agent.put(`/v1/agent/service/deregister/${id}`).catch((err: unknown) => ctx.log(`${prefix}: cleanup: ${String(err)}`));
    if (defaultsWritten) await deleteConfigEntry(ctx, 'service-defaults', dst).catch((err: unknown) => ctx.log(`${prefix}: cleanup: ${String(err)}`));
  };
  try {
    await agent.put('/v1/config', { Kind: 'service-defaults', Name: dst, Protocol: 'http' });
    defaultsWritten = true;
    for (const [i, version] of versions.entries()) {
      const appPort = ports[3 + 2 * i] as number;
      const sidecarPort = ports[4 + 2 * i] as number;
      const id = instanceOf(version);
      started.push(await testbed.startHaproxyApp(`${id}-app`, appPort, id));
      registered.push(id);
      await registerMeshServiceWithMeta(agent, { id, name: dst, port: appPort, sidecarPort, protocol: 'http' }, { version });
    }
    registered.push(src);
    await registerMeshService(agent, {
      id: src,
      name: src,
      port: ports[3] as number,
      sidecarPort: srcPublic,
      protocol: 'http',
      upstreams: [{ destinationName: dst, localBindPort: upstreamPort, protocol: 'http' }],
    });
    for (const version of versions) started.push(testbed.startHaproxyConnect(`${instanceOf(version)}-sidecar`, instanceOf(version)));
    const source = testbed.startHaproxyConnect(`${src}-sidecar`, src, ['-stats-addr', `127.0.0.1:${srcStats}`]);
    started.push(source);
    const sourceMetrics = async (): Promise<string> => {
      const res = await fetch(`http://127.0.0.1:${srcStats}/metrics`, { signal: AbortSignal.timeout(5_000) });
      const text = await res.text();
      if (!res.ok) throw new Error(`${src} sidecar /metrics answered ${res.status}: ${text.slice(0, 200)}`);
      return text;
    };
    const unseen = new Set(versions.map(instanceOf));
    await probe.until(`every instance of ${dst} (${[...unseen].join(', ')}) through the mesh`, (b) => unseen.delete(b) && unseen.size === 0, SETUP_TIMEOUT_MS);
    return { probe, destination: dst, bodyOf: instanceOf, sourceMetrics, sourceOutput: () => source.output(), close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** DELETE /v1/config/<kind>/<name>; throws on a non-2xx status. */
export async function deleteConfigEntry(ctx: ControlPlaneContext, kind: string, name: string): Promise<void> {
  const res = await ctx.testbed.agent.fetch(`/v1/config/${kind}/${encodeURIComponent(name)}`, { method: 'DELETE' });
  if (!res.ok) throw new Error(`DELETE /v1/config/${kind}/${name} failed: ${res.status} ${await res.text()}`);
}
