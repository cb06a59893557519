/**
 * Control-plane case "router shift": a service-router whose catch-all route's destination
 * ServiceSubset is flipped between v1 and v2.
 *
 * Set-up, measurement and failed requests: subset-flip.ts (an `rt-src` → `rt-dst` pair whose two
 * instances `rt-dst-v1` / `rt-dst-v2` carry Meta `version`). Set-up entry: a service-resolver with
 * subsets v1 and v2 (no DefaultSubset). Flip entry: the service-router with three routes:
 * PathPrefix `/v1/` to subset v1, PathPrefix `/v2/` to subset v2 (neither taken by the probe's
 * `GET /`), then the catch-all to subset v1 or v2. The two fixed routes keep both subsets' backends
 * in the configuration and make it a routed one: a router with nothing but a catch-all to one
 * subset renders no route rules, and flipping it is the same runtime change of servers as
 * resolver-subset (0 reloads, measured while writing this case).
 *
 * What it shows: unlike splitter-shift, a route's destination is part of the rendered rules, so
 * each flip changes the catch-all's `use_backend` and reloads the source sidecar's HAProxy (expect
 * one reload per flip); the figure includes the reload's quiet period (src/reconcile/reload-quiet.ts)
 * and the hitless reload itself, and the failed requests say whether the keep-alive probe noticed
 * the reload.
 */
import type { ControlPlaneCase } from './case.js';
import { runSubsetFlips, SUBSETS, VERSIONS, type FlipSpec } from './subset-flip.js';

const NAME = 'router-shift';

const spec: FlipSpec = {
  name: NAME,
  description: "router write (catch-all route's ServiceSubset flipped v1 <-> v2) -> only the new subset answers",
  prefix: 'rt',
  setUp: (destination) => [{ Kind: 'service-resolver', Name: destination, Subsets: SUBSETS }],
  flipTo: (destination, version) => ({
    Kind: 'service-router',
    Name: destination,
    Routes: [
      ...VERSIONS.map((v) => ({ Match: { HTTP: { PathPrefix: `/${v}/` } }, Destination: { Service: destination, ServiceSubset: v } })),
      { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: destination, ServiceSubset: version } },
    ],
  }),
};

/**
 * Every flip is a reload (about 0.7 s with its quiet period): 10 in the full profile, where the
 * runtime cases take 30 (the full run's 10-minute budget, bench/profile.ts).
 */
const FULL_REPEATS = 10;

export const routerShift: ControlPlaneCase = {
  name: NAME,
  produces: [NAME],
  repeats: (profile) => Math.min(profile.controlPlaneRepeats, FULL_REPEATS),
  run: (ctx) => runSubsetFlips(ctx, spec),
};
