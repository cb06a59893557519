/**
 * What the HAProxy side reports to the operations side (metrics, readiness): the supervisor's
 * states and the kinds and outcomes of runtime API operations. Bounded sets: they become label values.
 */

/** The states of the HAProxy master-worker supervisor (HaproxyProcess, in src/driver/). */
export type ProcessState = 'stopped' | 'starting' | 'running' | 'reloading' | 'stopping' | 'crashed';

/** The kinds of runtime API operations the planner emits (RuntimeOp in src/haproxy/runtime-ops). */
export type RuntimeOpKind = 'add-server' | 'remove-server' | 'set-weight' | 'set-address' | 'set-leaf' | 'set-intentions-epoch' | 'set-split-weights';

/** How one runtime operation ended; `pending-deletion`: a server in maintenance whose connections HAProxy still holds. */
export type RuntimeOpStatus = 'ok' | 'failed' | 'pending-deletion';
