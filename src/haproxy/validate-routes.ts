/**
 * Checks of a frontend's HTTP routes and of a backend's retries, before render writes them
 * (render-routes.ts). Every route match is rendered here once, so a value HAProxy cannot take is
 * refused for its upstream alone (translate leaves that upstream out) rather than for the whole
 * configuration. PURE.
 */
import { HaproxyConnectError } from '../errors.js';
import { HTTP_TOKEN, type HeaderOps } from '../domain/routes.js';
import type { Backend, Frontend } from './model.js';
import { routeMatchLines } from './render-routes.js';

/** `retry-on` keywords and status codes HAProxy 2.6 accepts (configuration.txt §4.2 `retry-on`). */
const RETRY_ON = /^(none|conn-failure|empty-response|junk-response|response-timeout|0rtt-rejected|401|403|404|408|425|50[0-4])$/;
/** More retries than this only multiply load on a failing service. */
const MAX_RETRIES = 100;
/** A header value goes into haproxy.cfg as one word: no line break or NUL can be in it. */
const UNSAFE_VALUE = /[\r\n\0]/;

function invalid(message: string): never {
  throw new HaproxyConnectError('MODEL_INVALID', `Invalid HAProxy model: ${message}`);
}

function checkHeaderOps(what: string, ops: HeaderOps): void {
  for (const name of [...ops.remove, ...ops.add.map(([n]) => n), ...ops.set.map(([n]) => n)]) {
    if (!HTTP_TOKEN.test(name)) invalid(`${what} header name ${JSON.stringify(name)} is not an HTTP token`);
  }
  for (const [name, value] of [...ops.add, ...ops.set]) {
    if (UNSAFE_VALUE.test(value)) invalid(`${what} header ${name} value ${JSON.stringify(value)} holds a line break or NUL`);
  }
}

/** The routes of `frontend`; `backends` are the backends its upstream defines. */
export function checkFrontendRoutes(frontend: Frontend, backends: ReadonlyMap<string, Backend>): void {
  const routes = frontend.routes ?? [];
  const what = `frontend ${JSON.stringify(frontend.name)}`;
  if (routes.length > 0 && frontend.mode !== 'http') invalid(`${what} has HTTP routes in mode ${frontend.mode}`);
  routes.forEach((route, k) => {
    const where = `${what} route ${k}`;
    // Every match rendered once (its ACLs, HAProxy's line limit): a bad one is refused for this upstream alone.
    routeMatchLines(route.match, k);
    if (route.prefixRewrite !== undefined) {
      const { prefix, replacement } = route.prefixRewrite;
      if (prefix === '' || UNSAFE_VALUE.test(prefix) || UNSAFE_VALUE.test(replacement)) invalid(`${where} prefix rewrite ${JSON.stringify(prefix)} → ${JSON.stringify(replacement)} cannot be written`);
      if (replacement.includes('\\')) invalid(`${where} prefix rewrite replacement ${JSON.stringify(replacement)} holds a backslash`);
    }
    checkHeaderOps(`${where} request`, route.requestHeaders);
    checkHeaderOps(`${where} response`, route.responseHeaders);
    if (route.legs.length === 0) invalid(`${where} has no leg`);
    if (route.legs.length > 1 && frontend.splitsMapFile === undefined) invalid(`${where} splits its requests without a splits map`);
    route.legs.forEach((leg, i) => {
      checkHeaderOps(`${where} leg ${i} request`, leg.requestHeaders);
      checkHeaderOps(`${where} leg ${i} response`, leg.responseHeaders);
      if (leg.backends.length === 0) invalid(`${where} leg ${i} has no backend`);
      for (const name of leg.backends) {
        const backend = backends.get(name);
        if (backend === undefined) invalid(`${where} leg ${i} uses backend ${JSON.stringify(name)}, which does not exist`);
        if (backend.mode !== 'http') invalid(`${where} leg ${i} uses backend ${JSON.stringify(name)} in mode ${backend.mode}`);
      }
    });
  });
}

/** A backend's retries and per-route timeout. */
export function checkBackendRoutes(backend: Backend): void {
  const what = `backend ${JSON.stringify(backend.name)}`;
  if (backend.retries !== undefined) {
    const { count, on } = backend.retries;
    if (!Number.isInteger(count) || count < 0 || count > MAX_RETRIES) invalid(`${what} retries ${count} must be an integer in 0..${MAX_RETRIES}`);
    for (const keyword of on) if (!RETRY_ON.test(keyword)) invalid(`${what} retry-on ${JSON.stringify(keyword)} is not one HAProxy 2.6 takes`);
  }
  if (backend.routeTimeout === true && backend.mode !== 'http') invalid(`${what} takes its timeout from an HTTP route in mode ${backend.mode}`);
}
