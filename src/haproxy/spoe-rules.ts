/**
 * The ACL texts of intentions enforcement, shared by the frontend rules (render.ts) and the SPOE
 * config file (translate/spoe.ts), so the message guard and the reject rule test the same thing.
 */
import { SPOE_ERROR_VAR, SPOE_REAUTHORIZE_GROUP, SPOE_VAR, SPOE_VAR_PREFIX } from '../domain/haproxy-names.js';

/** `sess.connect.<name>`. */
export function spoeVar(name: string): string {
  return `sess.${SPOE_VAR_PREFIX}.${name}`;
}

/** `txn.connect.<name>`: a variable of one request (HTTP) or connection (TCP). */
export function spoeTxnVar(name: string): string {
  return `txn.${SPOE_VAR_PREFIX}.${name}`;
}

/** The session's verdict belongs to the epoch the map at `epochMapPath` names as current. */
export function currentEpochAcl(epochMapPath: string): string {
  return `{ var(${spoeVar(SPOE_VAR.epoch)}),map_str_int(${epochMapPath},0) -m int eq 1 }`;
}

/** The agent allowed this session. */
export function allowedAcl(): string {
  return `{ var(${spoeVar(SPOE_VAR.auth)}) -m int eq 1 }`;
}

/**
 * In a worker that is stopping (an old worker after a reload), a request is asked again whatever
 * its session holds: the daemon updates the intentions epoch of the current worker only, so an old
 * worker's verdicts would outlive a change made after the reload. Forgetting the epoch makes the
 * SPOE message fire (its guard is the current epoch) and the verdict rules refuse unless a fresh
 * answer arrives. In HTTP mode `tcp-request content` runs once per request, before the filter's
 * `on-frontend-http-request` event.
 */
export function askAgainWhenStoppingLine(): string {
  return `tcp-request content unset-var(${spoeVar(SPOE_VAR.epoch)}) if { stopping }`;
}

/**
 * Before the rule that refuses: a verdict stamped with an epoch that is no longer current is asked
 * again. The message carries the epoch current when HAProxy sent it and the agent echoes it; when
 * the daemon moves the epoch on (add the new one, make it current, delete the old ones) while the
 * agent answers, the answer arrives for a deleted epoch. The same holds without a question: the
 * filter's guard found the session's verdict current, and the epoch moved (on another thread)
 * before this rule read it. Refusing it would deny a request that both the old and the new
 * intentions may allow (measured on a pair: 3 of 648,464 new connections refused through 120
 * intention changes at the destination, 0 of 893,383 through 180 with this rule). The second answer
 * is stamped with the new epoch; should the epoch move again meanwhile, the request is refused (fail
 * closed). A question that got no answer (agent down, timeout: SPOE_ERROR_VAR) is not asked again:
 * the refusal comes at once, as before. A request whose verdict is current pays one more map lookup.
 */
export function reauthorizeLine(directive: 'http-request' | 'tcp-request content', engine: string, epochMapPath: string): string {
  return `${directive} send-spoe-group ${engine} ${SPOE_REAUTHORIZE_GROUP} if !{ var(${spoeTxnVar(SPOE_ERROR_VAR)}) -m found } !${currentEpochAcl(epochMapPath)}`;
}
