/**
 * Exposed-path listeners on ports another process holds. HAProxy binds every listener of a
 * configuration or none: one exposed port in use elsewhere would make every reload fail and hold
 * up all other structural changes. So before a configuration with a new exposed listener is
 * written, its port is tried with a plain listen on the same address; a port that cannot be
 * bound (in use, not permitted, not an address of this host) becomes a reserved listener for
 * translate, which leaves that path out and says why, naming the port and the error; everything
 * else applies. Ports HAProxy already holds for us (in the applied model) are not tried.
 * The check is retried while a port stays taken (see Reconciler), so the path comes back once
 * the port is free.
 */
import { createServer } from 'node:net';
import type { HaproxyModel } from '../haproxy/model.js';
import type { Snapshot } from '../domain/snapshot.js';
import { exposedPaths } from '../translate/expose.js';
import type { ReservedListener } from '../translate/translate.js';

/** Tries to listen on address:port; resolves undefined when it could, else the error code (EADDRINUSE, EACCES...). */
export type PortProbe = (address: string, port: number) => Promise<string | undefined>;

export const probePort: PortProbe = (address, port) =>
  new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen({ host: address, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });

const EXPLAINED: Readonly<Record<string, string>> = {
  EADDRINUSE: 'another process holds it',
  EACCES: 'binding it is not permitted',
  EADDRNOTAVAIL: 'the address is not one of this host',
};

/** The exposed listeners of `snapshot` that are not applied yet and cannot be bound, as reserved listeners. */
export async function unbindableExposedPorts(snapshot: Snapshot, applied: HaproxyModel | undefined, probe: PortProbe): Promise<ReservedListener[]> {
  const paths = exposedPaths(snapshot);
  if (paths.length === 0) return [];
  const address = snapshot.registration.publicListener.bindAddress;
  const held = new Set((applied?.frontends ?? []).flatMap((f) => (f.bind.kind === 'inet' ? [f.bind.port] : [])));
  const ports = [...new Set(paths.map((p) => p.listenerPort))].filter((port) => !held.has(port)).sort((a, b) => a - b);
  const reserved: ReservedListener[] = [];
  for (const port of ports) {
    const code = await probe(address, port);
    if (code !== undefined) reserved.push({ conflict: `cannot be bound (${code}: ${EXPLAINED[code] ?? 'listen failed'})`, address, port });
  }
  return reserved;
}
