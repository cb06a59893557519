/**
 * The service-router of the `hc-http-routed` path: ten routes, the first nine of which no request
 * of the benchmark matches (wrk, fortio and the readiness check all send `GET /` without a query
 * and without the headers below), then the catch-all. So every request walks the nine routes'
 * conditions before it is routed, which is what the path costs over `hc-http`. The matches are
 * varied as real routers are (path prefix, exact and regex; methods; header exact, regex and
 * presence; query parameter), and so are the destinations (a prefix rewrite, timeouts, retries,
 * header changes), so the rendered rules and backends look like a real configuration's. Every route
 * leads to the same service, the routed path's own destination. PURE.
 */

/** Routes in the router, the catch-all included (Consul appends its own default route after them). */
export const ROUTED_PATH_ROUTES = 10;

/** A route's Match.HTTP as Consul takes it. */
interface HttpMatch {
  PathExact?: string;
  PathPrefix?: string;
  PathRegex?: string;
  Methods?: string[];
  Header?: Array<{ Name: string; Exact?: string; Regex?: string; Present?: boolean }>;
  QueryParam?: Array<{ Name: string; Exact?: string }>;
}

interface RouteEntry {
  Match: { HTTP: HttpMatch };
  Destination: Record<string, unknown>;
}

/** The nine routes no benchmark request matches (`GET /`, no query, none of these headers). */
function nonMatchingRoutes(service: string): RouteEntry[] {
  const to = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ Service: service, ...extra });
  return [
    { Match: { HTTP: { PathPrefix: '/r0' } }, Destination: to() },
    { Match: { HTTP: { PathPrefix: '/r1/' } }, Destination: to({ PrefixRewrite: '/', RequestTimeout: '5s' }) },
    { Match: { HTTP: { PathExact: '/r2/status' } }, Destination: to({ RequestHeaders: { Add: { 'x-route': 'r2' } } }) },
    { Match: { HTTP: { PathRegex: '/r3/[0-9]+/items' } }, Destination: to({ NumRetries: 2, RetryOnConnectFailure: true }) },
    { Match: { HTTP: { PathPrefix: '/r4', Methods: ['POST', 'PUT'] } }, Destination: to({ RequestTimeout: '30s' }) },
    // No path: these conditions are evaluated on every request that reaches them.
    { Match: { HTTP: { Header: [{ Name: 'x-tenant', Exact: 'r5' }] } }, Destination: to({ ResponseHeaders: { Set: { 'x-tenant-route': 'r5' } } }) },
    {
      Match: {
        HTTP: {
          Header: [
            { Name: 'x-canary', Regex: 'r6-[a-z]+' },
            { Name: 'x-debug', Present: true },
          ],
        },
      },
      Destination: to({ RetryOn: ['5xx'], NumRetries: 1 }),
    },
    { Match: { HTTP: { QueryParam: [{ Name: 'version', Exact: 'r7' }] } }, Destination: to() },
    { Match: { HTTP: { Methods: ['DELETE', 'PATCH'] } }, Destination: to({ RequestTimeout: '2s' }) },
  ];
}

/** The `service-router` config entry of `service`: the nine non-matching routes, then the catch-all to `service`. */
export function routedPathRouter(service: string): { Kind: 'service-router'; Name: string; Routes: RouteEntry[] } {
  return {
    Kind: 'service-router',
    Name: service,
    Routes: [...nonMatchingRoutes(service), { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: service } }],
  };
}

/**
 * Route-selection rules (`http-request set-var(txn.route) ...`, one per route) of the frontend of
 * `haproxyCfg` that binds `port`; undefined when no frontend binds it.
 */
export function routeRulesOfFrontend(haproxyCfg: string, port: number): number | undefined {
  let inFrontend = false;
  let binds = false;
  let rules = 0;
  let found: number | undefined;
  const close = (): void => {
    if (inFrontend && binds) found = (found ?? 0) + rules;
  };
  for (const line of haproxyCfg.split('\n')) {
    if (/^\S/.test(line)) {
      close();
      inFrontend = line.startsWith('frontend ');
      binds = false;
      rules = 0;
    } else if (inFrontend && new RegExp(`^\\s+bind \\S*:${port}(\\s|$)`).test(line)) binds = true;
    else if (inFrontend && /^\s+http-request set-var\(txn\.route\) /.test(line)) rules++;
  }
  close();
  return found;
}
