/**
 * The ACL texts of intentions enforcement, shared by the frontend rules (render.ts) and the SPOE
 * config file (translate/spoe.ts), so the message guard and the reject rule test the same thing.
 */
import { SPOE_VAR, SPOE_VAR_PREFIX } from '../domain/haproxy-names.js';

/** `sess.connect.<name>`. */
export function spoeVar(name: string): string {
  return `sess.${SPOE_VAR_PREFIX}.${name}`;
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
