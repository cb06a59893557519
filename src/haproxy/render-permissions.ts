/**
 * Intentions on an HTTP public listener → haproxy.cfg rules (../shared/L7.md §3.2). PURE.
 *
 * The agent decides once per connection (and again after an intentions change, on the next
 * request): `sess.connect.auth` 1 allow, 0 deny, 2 "each request is decided by L7 policy
 * `sess.connect.policy`". An allowed source costs one variable test per rule below; a denied one,
 * a stale verdict or no verdict at all (agent down) gets Envoy's `403 RBAC: access denied`.
 *
 * An L7 policy the compiler can render exactly becomes a first-match chain that sets
 * `txn.connect.authz` (1 allow, 0 deny): one rule per permission alternative, then the default.
 * Any other policy (a header pattern that can straddle the ',' joining a repeated header, a header
 * regex whose meaning differs between RE2's code points and PCRE2's bytes, too many rules, or a
 * policy the running configuration does not know yet) is decided by the agent for each request:
 * `send-spoe-group` sends the method, the path and the headers, and the agent sets the same
 * variable. Whatever sets no verdict is denied.
 */
import { SPOE_AUTH, SPOE_PERMISSIONS_GROUP, SPOE_VAR } from '../domain/haproxy-names.js';
import type { L7Policy, PermissionMatch } from '../domain/intentions.js';
import type { RouteMatch } from '../domain/routes.js';
import { isHaproxyConnectError } from '../errors.js';
import { approximations, routeConditionTerms } from './route-acl.js';
import { spoeTxnVar, spoeVar } from './spoe-rules.js';

/** Envoy's RBAC denial (its HTTP filter's local reply). */
export const RBAC_DENIED_STATUS = 403;
export const RBAC_DENIED_BODY = 'RBAC: access denied';
export const RBAC_DENY_LINE = `http-request return status ${RBAC_DENIED_STATUS} content-type text/plain string '${RBAC_DENIED_BODY}'`;

/** Rendered ACLs above this leave the remaining policies to the agent (a bounded configuration). */
export const MAX_RENDERED_ACLS = 4_000;
/** Alternatives one permission may expand to (inverted matchers multiply them). */
const MAX_ALTERNATIVES = 16;

/** The per-request verdict: set by the rendered chains and, with the same name, by the agent (var-prefix). */
const TXN_AUTHZ = spoeTxnVar(SPOE_VAR.authz);

/** Constructs whose meaning differs on non-ASCII header values (RE2: code points; PCRE2 in HAProxy: bytes). */
const CODE_POINT_SENSITIVE = /(^|[^\\])(?:\\\\)*(?:\.|\[\^)|\\[DSWPpC]|\(\?[a-zA-Z]*[is]/;

function asRouteMatch(match: PermissionMatch): RouteMatch {
  return { ...(match.path !== undefined && { path: match.path }), methods: match.methods, headers: match.headers, queryParams: [] };
}

/** Why `policy` cannot be rendered as exact ACLs (undefined: it can). */
export function unrenderable(policy: L7Policy): string | undefined {
  for (const [index, permission] of policy.permissions.entries()) {
    const match = permission.http;
    if (match === undefined) continue;
    const at = `permission ${index + 1}`;
    const approx = approximations(asRouteMatch(match));
    if (approx.length > 0) return `${at}: ${approx[0]}`;
    const regex = match.headers.find((h) => h.match.kind === 'regex' && CODE_POINT_SENSITIVE.test(h.match.value));
    if (regex !== undefined) return `${at}: header ${JSON.stringify(regex.name)} regex reads code points in RE2 and bytes in HAProxy`;
    try {
      if (routeConditionTerms(asRouteMatch(match)).length > MAX_ALTERNATIVES) return `${at}: more than ${MAX_ALTERNATIVES} alternatives`;
    } catch (err) {
      if (isHaproxyConnectError(err)) return `${at}: ${err.message}`;
      throw err;
    }
  }
  return undefined;
}

/** How many ACLs a renderable policy takes. */
export function policyAclCount(policy: L7Policy): number {
  let count = 0;
  for (const permission of policy.permissions) {
    if (permission.http !== undefined) count += routeConditionTerms(asRouteMatch(permission.http)).reduce((n, c) => n + c.length, 0);
  }
  return count;
}

/**
 * The frontend rules, in order: deny unless allowed or L7-governed under the current epoch
 * (`currentEpoch` is the epoch ACL), each rendered policy's chain, the agent for the rest, and
 * the final verdict.
 */
export function permissionLines(policies: readonly L7Policy[], engine: string, currentEpoch: string): string[] {
  const auth = spoeVar(SPOE_VAR.auth);
  const l7 = `{ var(${auth}) -m int eq ${SPOE_AUTH.l7} }`;
  const undecided = `!{ var(${TXN_AUTHZ}) -m found }`;
  const acls: string[] = [];
  const rules: string[] = [];
  policies.forEach((policy, p) => {
    const guard = `${l7} { var(${spoeVar(SPOE_VAR.policy)}) -m str ${policy.id} } ${undecided}`;
    policy.permissions.forEach((permission, k) => {
      const verdict = permission.action === 'allow' ? 1 : 0;
      const alternatives = permission.http === undefined ? [[]] : routeConditionTerms(asRouteMatch(permission.http));
      let n = 0;
      for (const conjunction of alternatives) {
        const names = conjunction.map((term) => {
          const name = `l7_${p}_${k}_${n++}`;
          acls.push(`acl ${name} ${term.expression}`);
          return `${term.negated ? '!' : ''}${name}`;
        });
        rules.push(`http-request set-var(${TXN_AUTHZ}) int(${verdict}) if ${[guard, ...names].join(' ')}`);
      }
    });
    rules.push(`http-request set-var(${TXN_AUTHZ}) int(${policy.defaultAllow ? 1 : 0}) if ${guard}`);
  });
  return [
    `${RBAC_DENY_LINE} unless { var(${auth}) -m int ge ${SPOE_AUTH.allow} } ${currentEpoch}`,
    ...acls,
    ...rules,
    `http-request send-spoe-group ${engine} ${SPOE_PERMISSIONS_GROUP} if ${l7} ${undecided}`,
    `${RBAC_DENY_LINE} if ${l7} !{ var(${TXN_AUTHZ}) -m int eq 1 }`,
  ];
}
