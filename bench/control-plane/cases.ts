/**
 * The control-plane cases, run in this order after the data-plane workloads.
 * Extension point: add a case (convergence after an endpoint is removed or turns critical, leaf
 * rotation, CA rotation, ...) as a module exporting a `ControlPlaneCase` and list it here; the
 * runner, the JSON results and the Markdown table pick it up.
 */
import type { ControlPlaneCase } from './case.js';
import { endpointChurn } from './endpoint-churn.js';
import { endpointScale } from './endpoint-scale.js';

export const CONTROL_PLANE_CASES: readonly ControlPlaneCase[] = [endpointChurn, endpointScale];
