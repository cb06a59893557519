/**
 * The control-plane cases, run in this order after the data-plane workloads.
 * Extension point: add a case as a module exporting a `ControlPlaneCase` and list it here; the
 * runner, the JSON results and the Markdown table pick it up.
 */
import type { ControlPlaneCase } from './case.js';
import { endpointChurn } from './endpoint-churn.js';
import { caRotation } from './ca-rotation.js';
import { endpointScale } from './endpoint-scale.js';
import { intentionFlip } from './intention-flip.js';
import { resolverSubset } from './resolver-subset.js';
import { routerShift } from './router-shift.js';
import { splitterShift } from './splitter-shift.js';
import { upstreamScale } from './upstream-scale.js';

/** CA rotation runs last: it gives every sidecar of the testbed new roots and leaves. */
export const CONTROL_PLANE_CASES: readonly ControlPlaneCase[] = [endpointChurn, intentionFlip, resolverSubset, splitterShift, routerShift, endpointScale, upstreamScale, caRotation];
