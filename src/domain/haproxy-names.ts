/**
 * Every name haproxy-connect gives to something in HAProxy: proxies, servers and run-directory
 * files. One home so that translate, the planner and the runtime API client agree.
 *
 * HAProxy proxy and server names allow [A-Za-z0-9_.:-]. Names derived from Consul data keep a
 * readable, sanitized part and add a short FNV-1a hash of the raw value, so two values that
 * sanitize to the same text still get different names, and the name never changes while the
 * value does not (runtime operations address servers by name).
 */

/** The mTLS listener other sidecars connect to. */
export const PUBLIC_FRONTEND_NAME = 'public_listener';
/** The backend that forwards to the local application. */
export const LOCAL_APP_BACKEND_NAME = 'local_app';
export const LOCAL_APP_SERVER_NAME = 'app';

/** Run-directory files (no slashes: the applier writes them next to haproxy.cfg). */
export const LEAF_FILE = 'leaf.pem';
/** The Data Plane API's configuration in the run directory (`-dataplane`); its process is `<binary> -f <this>`. */
export const DATAPLANE_CONFIG_FILE = 'dataplaneapi.yaml';
export const ROOTS_FILE = 'roots.pem';
export const PUBLIC_CRT_LIST_FILE = 'public.crtlist';
export const ADMIN_SOCKET_FILE = 'admin.sock';

/**
 * HAProxy's own metrics: a frontend on a unix socket in the run directory serving the built-in
 * Prometheus exporter and a liveness answer. The stats server (src/telemetry) scrapes it.
 */
export const STATS_FRONTEND_NAME = 'stats';
export const STATS_SOCKET_FILE = 'stats.sock';
export const STATS_METRICS_PATH = '/metrics';
export const STATS_HEALTH_PATH = '/health';

/**
 * HAProxy's logs (its own messages and access logs): a ring whose server is the daemon's receiver
 * on this unix stream socket in the run directory (src/telemetry/haproxy-logs.ts).
 */
export const LOG_RING_NAME = 'haproxy_connect_logs';
export const LOG_SOCKET_FILE = 'log.sock';

/**
 * Intentions enforcement (SPOE). The agent (src/intentions/authorizer.ts), the SPOE config
 * (src/translate/spoe.ts) and the frontend rules (render.ts) must agree on every name here.
 */
export const SPOE_ENGINE = 'intentions';
export const SPOE_CONFIG_FILE = 'spoe-intentions.conf';
export const SPOE_AGENT_SOCKET_FILE = 'spoe.sock';
export const SPOE_AGENT_BACKEND_NAME = 'spoe_intentions_agent';
/**
 * Map file with two kinds of entries: `current <epoch>` names the epoch of the intentions HAProxy
 * enforces now, and `<epoch> 1` marks it valid. Updated at runtime when the intentions change.
 */
export const INTENTIONS_EPOCH_MAP_FILE = 'intentions-epoch.map';
export const INTENTIONS_EPOCH_CURRENT_KEY = 'current';
/**
 * Map file of the HTTP route splits: `<frontend>/<route>/<leg> <cut>` for every leg but the last
 * of a split route, where a request whose `rand(10000)` is below the cut (and above the previous
 * legs' cuts) takes the leg. Updated at runtime when only the weights change.
 */
export const ROUTE_SPLITS_MAP_FILE = 'route-splits.map';

/** The splits map's key of leg `leg` of route `route` of frontend `frontend`. */
export function routeSplitKey(frontend: string, route: number, leg: number): string {
  return `${frontend}/${route}/${leg}`;
}
export const SPOE_MESSAGE = 'authorize';
/**
 * The same question as SPOE_MESSAGE, in a group of its own that a rule sends when the verdict came
 * back stamped with an epoch the map no longer holds: the intentions changed while the agent
 * answered (the daemon makes the new epoch current and drops the old ones at runtime), so the
 * request is asked again instead of refused.
 */
export const SPOE_REAUTHORIZE_MESSAGE = 'reauthorize';
export const SPOE_REAUTHORIZE_GROUP = 'reauthorize';
/**
 * `option set-on-error`: HAProxy sets `txn.connect.<this>` when a question got no answer (agent
 * down, timeout, error), so the rule that asks again leaves such a stream to the refusal at once.
 */
export const SPOE_ERROR_VAR = 'error';
/** `option var-prefix`: the agent's variables are `sess.<prefix>.<name>`. */
export const SPOE_VAR_PREFIX = 'connect';
/** Arguments of the SPOE message. */
export const SPOE_ARG = { cert: 'cert', src: 'src', srcPort: 'src_port', epoch: 'epoch', http: 'http', chain: 'chain', xfcc: 'xfcc' } as const;
/**
 * The per-request message of L7 policies the configuration does not render (src/haproxy/
 * render-permissions.ts): sent by `http-request send-spoe-group`, answered with `txn.connect.authz`.
 */
export const SPOE_PERMISSIONS_MESSAGE = 'permissions';
export const SPOE_PERMISSIONS_GROUP = 'l7';
export const SPOE_PERMISSIONS_ARG = { policy: 'policy', method: 'method', path: 'path', headers: 'headers' } as const;
/** The header Envoy writes the verified client certificate into (APPEND_FORWARD) or removes (SANITIZE). */
export const XFCC_HEADER = 'x-forwarded-client-cert';
/** Values of `sess.connect.auth`. */
export const SPOE_AUTH = { deny: 0, allow: 1, l7: 2 } as const;
/** Variables the agent sets (without scope and prefix): `sess.` ones per connection, `txn.` ones per request. */
export const SPOE_VAR = {
  /** SPOE_AUTH: 1 allowed, 0 denied, 2 decided per request by `policy`; absent (agent error or timeout) = denied too. */
  auth: 'auth',
  /** With auth 2: the id of the L7 policy (domain/intentions.ts L7Policy) that decides each request. */
  policy: 'policy',
  /** txn scope: the permissions message's verdict for one request (1 allow, 0 deny). */
  authz: 'authz',
  /** The X-Forwarded-Client-Cert element of the connection (when the message asked for it). */
  xfcc: 'xfcc',
  /** The epoch the verdict belongs to: a connection is asked again when it is no longer current. */
  epoch: 'epoch',
  sourceService: 'source_service',
  sourceNamespace: 'source_namespace',
  sourcePartition: 'source_partition',
  sourceDatacenter: 'source_dc',
} as const;

/** Upstream frontends and backends start with this (reload reasons are grouped by it). */
export const UPSTREAM_PREFIX = 'upstream_';
const BACKEND_SUFFIX = '_be';
/** Longest readable part kept before the hash; keeps config lines and `show stat` readable. */
const MAX_READABLE_LENGTH = 48;

/** Characters HAProxy accepts in proxy and server names. */
export const HAPROXY_NAME_PATTERN = /^[A-Za-z0-9_.:-]+$/;

/** The characters a path may have to go into haproxy.cfg or a runtime command unquoted. */
export const PLAIN_PATH_CHARACTERS = '[A-Za-z0-9_.@+:/-]';
const PLAIN_ABSOLUTE_PATH = new RegExp(`^/${PLAIN_PATH_CHARACTERS}*$`);

/** An absolute path of plain characters, without `..`: safe in haproxy.cfg and on the runtime API. */
export function isPlainAbsolutePath(path: string): boolean {
  return PLAIN_ABSOLUTE_PATH.test(path) && !path.split('/').includes('..');
}

const FNV_OFFSET_BASIS_32 = 0x811c9dc5;
const FNV_PRIME_32 = 0x01000193;

/**
 * 32-bit FNV-1a over the UTF-8 bytes of `value`, as 8 lowercase hex digits. Pure and
 * deterministic (no node:crypto needed for a name suffix; this is not a security boundary).
 */
export function fnv1a32Hex(value: string): string {
  let hash = FNV_OFFSET_BASIS_32;
  for (const byte of new TextEncoder().encode(value)) {
    hash ^= byte;
    hash = Math.imul(hash, FNV_PRIME_32) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** Replaces every run of characters outside [A-Za-z0-9.-] by one '_' and trims '_' at the ends. */
function readable(value: string): string {
  const cleaned = value.replace(/[^A-Za-z0-9.-]+/g, '_').replace(/^_+|_+$/g, '');
  return cleaned.slice(0, MAX_READABLE_LENGTH).replace(/_+$/, '');
}

/** `<readable>_<hash>`, always a valid HAProxy name even for an empty value. */
function stableName(value: string): string {
  const text = readable(value);
  const hash = fnv1a32Hex(value);
  return text === '' ? hash : `${text}_${hash}`;
}

/** Frontend of an upstream, e.g. `upstream_service_default_web_dc2_1a2b3c4d` for `service:default/web@dc2`. */
export function upstreamFrontendName(upstreamKey: string): string {
  return `${UPSTREAM_PREFIX}${stableName(upstreamKey)}`;
}

/** Backend of an upstream: the frontend's name with `_be`, so both show up together in `show stat`. */
export function upstreamBackendName(upstreamKey: string): string {
  return `${upstreamFrontendName(upstreamKey)}${BACKEND_SUFFIX}`;
}

/** Server of an upstream endpoint, from its stable id (`<node>/<proxy service id>`). */
export function endpointServerName(endpointId: string): string {
  return stableName(endpointId);
}

/** A file or socket of the run directory as an absolute path (`dir` may end with slashes). */
export function runDirPath(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`;
}
