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
