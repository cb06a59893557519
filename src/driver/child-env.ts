/**
 * The environment of every HAProxy we run (the master-worker process, `haproxy -c`, `haproxy -v`).
 *
 * An allow-list, not a deny-list: the daemon's environment carries CONSUL_HTTP_TOKEN, client key
 * paths and whatever else the operator exported, and a child's environment is readable in
 * /proc/<pid>/environ and inherited by everything it execs (the master re-executes itself on each
 * reload). HAProxy needs none of it: our configuration references no environment variable.
 */

/**
 * PATH finds the binary (and lets the master re-execute itself by name); the locale and time zone
 * only shape HAProxy's messages and log timestamps.
 */
export const HAPROXY_ENV_ALLOWED = ['PATH', 'LANG', 'LC_ALL', 'TZ'] as const;

/** The allowed variables of `env` that are set, and nothing else. */
export function haproxyEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const name of HAPROXY_ENV_ALLOWED) {
    const value = env[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}
