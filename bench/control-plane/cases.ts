/**
 * The control-plane cases, run in this order after the data-plane workloads.
 * Extension point: add a case as a module exporting a `ControlPlaneCase` and list it here; the
 * runner, the JSON results and the Markdown table pick it up.
 */
import type { ControlPlaneCase } from './case.js';
import { endpointChurn } from './endpoint-churn.js';
import { caRotation } from './ca-rotation.js';
import { daemonMemory } from './daemon-memory.js';
import { endpointScale } from './endpoint-scale.js';
import { intentionFlip } from './intention-flip.js';
import { intentionScale } from './intention-scale.js';
import { l7PermissionChange } from './l7-permission-change.js';
import { l7SourceMove } from './l7-source-move.js';
import { resolverSubset } from './resolver-subset.js';
import { routerShift } from './router-shift.js';
import { splitterShift } from './splitter-shift.js';
import { upstreamScale } from './upstream-scale.js';

/**
 * CA rotation runs last: it gives every sidecar of the testbed new roots and leaves. intention-scale
 * runs in the full profile only (`profiles`).
 */
export const CONTROL_PLANE_CASES: readonly ControlPlaneCase[] = [
  endpointChurn,
  intentionFlip,
  l7PermissionChange,
  l7SourceMove,
  resolverSubset,
  splitterShift,
  routerShift,
  endpointScale,
  upstreamScale,
  daemonMemory,
  intentionScale,
  caRotation,
];
