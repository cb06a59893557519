/**
 * Control-plane case "splitter shift": a service-splitter's weights flipped between 100/0 and
 * 0/100 over the destination's subsets v1 and v2, the way a canary is promoted or rolled back.
 *
 * Set-up, measurement and failed requests: subset-flip.ts (an `ss-src` → `ss-dst` pair whose two
 * instances `ss-dst-v1` / `ss-dst-v2` carry Meta `version`). Set-up entry: a service-resolver with
 * subsets v1 and v2 (no DefaultSubset). Flip entry: the service-splitter with splits v1 and v2, the
 * new subset weighted 100 and the old one 0 (both legs stay in the chain).
 *
 * What it shows: the time from the splitter write to the moment only the new subset answers
 * (Consul recompiling the chain and answering the sidecar's blocking query, then the new cut points
 * written into the splits map with `set map`), that no request fails while traffic moves, and the
 * source sidecar's HAProxy reloads during the flips, which should be 0: only the weights change, and
 * weights are runtime changes, never a reload (the description gives the count next to the number
 * of runtime changes).
 */
import type { ControlPlaneCase } from './case.js';
import { runSubsetFlips, SUBSETS, VERSIONS, type FlipSpec } from './subset-flip.js';

const NAME = 'splitter-shift';

const spec: FlipSpec = {
  name: NAME,
  description: 'splitter write (weights v1/v2 flipped 100/0 <-> 0/100) -> only the new subset answers',
  prefix: 'ss',
  setUp: (destination) => [{ Kind: 'service-resolver', Name: destination, Subsets: SUBSETS }],
  flipTo: (destination, version) => ({
    Kind: 'service-splitter',
    Name: destination,
    Splits: VERSIONS.map((v) => ({ Weight: v === version ? 100 : 0, ServiceSubset: v })),
  }),
};

export const splitterShift: ControlPlaneCase = { name: NAME, produces: [NAME], run: (ctx) => runSubsetFlips(ctx, spec) };
