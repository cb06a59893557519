/**
 * Reload reasons (free text from plan.ts and the reconciler, naming proxies, files and servers) →
 * a small fixed set of categories, so the `reason` label of the reload counter stays bounded.
 * PURE. A reason this does not know is `other`: add a category when plan.ts grows one.
 */
import {
  INTENTIONS_EPOCH_MAP_FILE,
  LEAF_FILE,
  LOCAL_APP_BACKEND_NAME,
  PUBLIC_CRT_LIST_FILE,
  PUBLIC_FRONTEND_NAME,
  ROOTS_FILE,
  SPOE_AGENT_BACKEND_NAME,
  SPOE_CONFIG_FILE,
  UPSTREAM_PREFIX,
} from '../domain/haproxy-names.js';

export const RELOAD_REASON_CATEGORIES = [
  /** The first configuration (HAProxy starts). */
  'initial',
  /** The public listener or the local application (bind, protocol, timeouts, local port). */
  'listener',
  /** An upstream was added, removed or changed (listener, settings, endpoints that need a reload). */
  'upstream',
  /** CA roots changed (always a reload: FACTS §2). */
  'roots',
  /** The leaf could not be updated at runtime. */
  'leaf',
  /** Intentions enforcement was switched or its files changed shape, or L7 permissions need new rules. */
  'intentions',
  /** Global settings (threads, maxconn, the metrics frontend, ...). */
  'settings',
  /** The live state differed from the applied one (drift repair). */
  'drift',
  /** Runtime API operations failed, so a reload applied them. */
  'runtime-failure',
  /** HAProxy was not running (crashed, restarting) when the change came. */
  'restart',
  'other',
] as const;

export type ReloadReasonCategory = (typeof RELOAD_REASON_CATEGORIES)[number];

function proxyCategory(name: string): ReloadReasonCategory {
  if (name.startsWith(UPSTREAM_PREFIX)) return 'upstream';
  if (name === PUBLIC_FRONTEND_NAME || name === LOCAL_APP_BACKEND_NAME) return 'listener';
  // Proxy.Expose listeners and their backends (translate/expose.ts: exposed_path_<port>, exposed_cluster_<port>).
  if (name.startsWith('exposed_path_') || name.startsWith('exposed_cluster_')) return 'listener';
  if (name === SPOE_AGENT_BACKEND_NAME) return 'intentions';
  return 'other';
}

function fileCategory(name: string): ReloadReasonCategory {
  switch (name) {
    case LEAF_FILE:
      return 'leaf';
    case ROOTS_FILE:
      return 'roots';
    case PUBLIC_CRT_LIST_FILE:
      return 'listener';
    case SPOE_CONFIG_FILE:
    case INTENTIONS_EPOCH_MAP_FILE:
      return 'intentions';
    default:
      return 'other';
  }
}

/** The category of one reason string. */
export function reloadReasonCategory(reason: string): ReloadReasonCategory {
  if (reason === 'initial configuration') return 'initial';
  if (reason.startsWith('drift: ')) return 'drift';
  if (reason.startsWith('runtime update failed: ')) return 'runtime-failure';
  if (reason.startsWith('haproxy is ')) return 'restart';
  if (reason.startsWith('CA roots changed')) return 'roots';
  if (reason === 'global settings changed') return 'settings';
  // `N servers to add (more than M: ...)`: endpoints of upstreams.
  if (/^\d+ servers to add\b/.test(reason)) return 'upstream';
  if (/^frontend \S+ L7 permissions changed/.test(reason)) return 'intentions';
  const proxy = /^(?:frontend|backend) (\S+)/.exec(reason);
  if (proxy?.[1] !== undefined) return proxyCategory(proxy[1]);
  const file = /^file (\S+)/.exec(reason);
  if (file?.[1] !== undefined) return fileCategory(file[1]);
  return 'other';
}

/** The distinct categories of a reload's reasons, in RELOAD_REASON_CATEGORIES order. */
export function reloadReasonCategories(reasons: readonly string[]): ReloadReasonCategory[] {
  const found = new Set(reasons.map(reloadReasonCategory));
  if (found.size === 0) found.add('other');
  return RELOAD_REASON_CATEGORIES.filter((c) => found.has(c));
}
