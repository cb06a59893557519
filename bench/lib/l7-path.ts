/**
 * L7 intentions in the benchmark: the permissions of the `hc-http-l7` and `hc-http-l7-agent`
 * paths, the `service-intentions` entries the control-plane cases write, and readers of what a
 * destination sidecar rendered (its haproxy.cfg). PURE.
 *
 * The two data-plane policies (testbed.ts) give the load generator's source (`hc-src`) an L7
 * intention on its destination, so every request of the path goes through the destination's L7
 * rules. The benchmark's requests (wrk, fortio and the readiness check: `GET /`, no query, none of
 * the headers below) match none of the earlier permissions and are allowed by the last one, so each
 * request walks the whole chain before it is served:
 * - rendered (`hc-http-l7`): five permissions the compiler renders exactly as a first-match ACL
 *   chain (src/haproxy/render-permissions.ts): a deny on the `/admin` prefix, an exact path, a
 *   header exact match, a path regex, then the allow on methods GET and POST;
 * - agent-decided (`hc-http-l7-agent`): the same with, as the second permission, a header Exact
 *   value holding a comma (`x-unused: a,b`), which no HAProxy ACL matches exactly (a repeated
 *   header is joined with ','), so the compiler leaves the whole policy to the agent and every
 *   request pays a SPOP round trip (`send-spoe-group` with the method, path and headers).
 */

/** A permission as Consul's `service-intentions` entries spell it. */
export interface ConsulPermission {
  Action: 'allow' | 'deny';
  HTTP: {
    PathExact?: string;
    PathPrefix?: string;
    PathRegex?: string;
    Methods?: string[];
    Header?: Array<{ Name: string; Exact?: string; Prefix?: string; Suffix?: string; Regex?: string; Present?: boolean; Invert?: boolean }>;
  };
}

/** One source of a `service-intentions` entry: L4 (`Action`) or L7 (`Permissions`). */
export type IntentionSource = { Name: string; Action: 'allow' | 'deny' } | { Name: string; Permissions: ConsulPermission[] };

export interface ServiceIntentionsEntry {
  Kind: 'service-intentions';
  Name: string;
  Sources: IntentionSource[];
}

/** A path every L7 policy of the benchmark denies (the readiness check asks it: a 403 proves the rules apply). */
export const DENIED_PATH = '/admin/bench';

/** The rendered path's permissions: the benchmark's `GET /` is allowed by the last one. */
export const RENDERED_L7_PERMISSIONS: readonly ConsulPermission[] = [
  { Action: 'deny', HTTP: { PathPrefix: '/admin' } },
  { Action: 'allow', HTTP: { PathExact: '/healthz' } },
  { Action: 'allow', HTTP: { PathPrefix: '/api/', Header: [{ Name: 'x-tenant', Exact: 'bench' }] } },
  { Action: 'allow', HTTP: { PathRegex: '/items/[0-9]+' } },
  { Action: 'allow', HTTP: { PathPrefix: '/', Methods: ['GET', 'POST'] } },
];

/** The agent path's permissions: the rendered ones with a comma-valued header Exact as the second (no request carries `x-unused`). */
export const AGENT_L7_PERMISSIONS: readonly ConsulPermission[] = [
  RENDERED_L7_PERMISSIONS[0] as ConsulPermission,
  { Action: 'allow', HTTP: { Header: [{ Name: 'x-unused', Exact: 'a,b' }] } },
  ...RENDERED_L7_PERMISSIONS.slice(1),
];

export function serviceIntentions(destination: string, sources: readonly IntentionSource[]): ServiceIntentionsEntry {
  return { Kind: 'service-intentions', Name: destination, Sources: [...sources] };
}

/** The `http-request` lines of a rendered policy chain set this variable (render-permissions.ts's TXN_AUTHZ). */
const CHAIN_RULE = /^\s+http-request set-var\(txn\.connect\.authz\) int\([01]\) if .*\{ var\(sess\.connect\.policy\) -m str (\S+) \}/;

/** What the L7 rules of a haproxy.cfg hold. */
export interface RenderedL7 {
  /** Ids of the policies rendered as ACL chains, in order of appearance. */
  policies: string[];
  /** `acl l7_...` lines (one per rendered matcher). */
  acls: number;
  /** `http-request` lines of the chains (one per permission alternative, plus each policy's default). */
  chainRules: number;
  /** `send-spoe-group` lines (the agent's per-request decision for the policies not rendered). */
  agentRules: number;
}

/** Reads the rendered L7 policies out of a sidecar's haproxy.cfg (every frontend). */
export function renderedL7(haproxyCfg: string): RenderedL7 {
  const seen = new Set<string>();
  const policies: string[] = [];
  let acls = 0;
  let chainRules = 0;
  let agentRules = 0;
  for (const line of haproxyCfg.split('\n')) {
    if (/^\s+acl l7_\d+_\d+_\d+ /.test(line)) acls++;
    else if (/^\s+http-request send-spoe-group /.test(line)) agentRules++;
    else {
      const m = CHAIN_RULE.exec(line);
      if (m?.[1] === undefined) continue;
      chainRules++;
      if (!seen.has(m[1])) {
        seen.add(m[1]);
        policies.push(m[1]);
      }
    }
  }
  return { policies, acls, chainRules, agentRules };
}

/** The values of the rendered `path -m beg` ACLs of the L7 chains (`acl l7_... path -m beg /s00042/`), in order. */
export function renderedPathPrefixes(haproxyCfg: string): string[] {
  return [...haproxyCfg.matchAll(/^\s+acl l7_\d+_\d+_\d+ path -m beg (\S+)$/gm)].map((m) => m[1] as string);
}

/** True when a frontend of `haproxyCfg` binds `port` (the public listener's `bind <addr>:<port> ssl ...`). */
export function bindsPort(haproxyCfg: string, port: number): boolean {
  return new RegExp(`^\\s+bind \\S*:${port}(\\s|$)`, 'm').test(haproxyCfg);
}

/** Source name `s00000` ... of the scale case's `index`-th source (five digits). */
export function scaleSourceName(index: number): string {
  return `s${String(index).padStart(5, '0')}`;
}

/** The scale case's `index`-th source: its own L7 policy, a deny on its own path prefix (1 ACL; default allow otherwise). */
export function scaleSource(index: number): IntentionSource {
  const name = scaleSourceName(index);
  return { Name: name, Permissions: scaleSourcePermissions(index) };
}

export function scaleSourcePermissions(index: number): ConsulPermission[] {
  return [{ Action: 'deny', HTTP: { PathPrefix: `/${scaleSourceName(index)}/` } }];
}
