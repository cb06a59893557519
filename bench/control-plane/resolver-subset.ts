/**
 * Control-plane case "resolver subset": a service-resolver's DefaultSubset flipped between two
 * subsets of the destination, through Consul's discovery chain.
 *
 * Set-up, measurement and failed requests: subset-flip.ts (a `rs-src` → `rs-dst` pair whose two
 * instances `rs-dst-v1` / `rs-dst-v2` carry Meta `version`). There are no set-up entries: the flip
 * entry is the resolver itself, with subsets v1 and v2 (filters on `Service.Meta.version`) and the
 * new DefaultSubset.
 *
 * The figure covers the whole path: Consul compiling the new chain and answering the sidecar's
 * blocking chain query, the sidecar starting the new target's health watch, and the change of
 * servers in HAProxy (a runtime change, README "Discovery chain"). The source sidecar's reloads
 * during the flips are counted too.
 */
import type { ControlPlaneCase } from './case.js';
import { runSubsetFlips, SUBSETS, type FlipSpec } from './subset-flip.js';

const NAME = 'resolver-subset';

const spec: FlipSpec = {
  name: NAME,
  description: 'resolver write (DefaultSubset flipped v1 <-> v2) -> only the new subset answers',
  prefix: 'rs',
  setUp: () => [],
  flipTo: (destination, version) => ({ Kind: 'service-resolver', Name: destination, DefaultSubset: version, Subsets: SUBSETS }),
};

export const resolverSubset: ControlPlaneCase = { name: NAME, produces: [NAME], run: (ctx) => runSubsetFlips(ctx, spec) };
