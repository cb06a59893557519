/**
 * `Proxy.Expose` of a connect-proxy registration, and the checks the agent reroutes through the
 * sidecar (GET /v1/agent/checks), read the way Consul 1.16.2 reads them:
 * - `Expose.Paths[]`: `Path`, `LocalPathPort`, `ListenerPort`, `Protocol` (http, the default, or
 *   http2; lower-cased as agent/structs/structs.go Validate does). One bad path is left out and
 *   reported (`refused`); the others and the rest of the registration apply. Consul only refuses
 *   an empty path; a path that is not absolute would never match a request under Envoy (a
 *   request's path always starts with '/'), so it is refused here with a clear reason instead.
 * - checks: an `http` or `grpc` check of the proxied service with an `ExposedPort`. The agent's
 *   API does not publish the check's own URL (its `Definition` is empty), so an HTTP check's path
 *   comes from the rerouted URL the agent reports in the check's `Output`
 *   (agent/checks/check.go: `HTTP <method> <url>: <status> Output: ...`, or Go's
 *   `<Method> "<url>": <error>`). A gRPC check always exposes /grpc.health.v1.Health/Check.
 */
import {
  DEFAULT_EXPOSE_PROTOCOL,
  EXPOSE_PROTOCOLS,
  GRPC_HEALTH_CHECK_PATH,
  exposePathProblem,
  type ExposeConfig,
  type ExposedCheck,
  type ExposePath,
  type ExposeProblem,
  type ExposeProtocol,
} from '../domain/expose.js';
import { show } from './show.js';

const MAX_PORT = 65535;

function readPort(value: unknown): number | undefined {
  const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= MAX_PORT ? n : undefined;
}

/** Consul's JSON uses `ListenerPort`; a registration may also have kept the snake_case alias. */
function field(raw: Record<string, unknown>, name: string, alias: string): unknown {
  const value = raw[name];
  return value === undefined || value === null || value === 0 || value === '' ? raw[alias] : value;
}

function parseExposePath(raw: unknown, item: string, localServicePort: number): ExposePath | string {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return `is ${show(raw)}, not an object`;
  const r = raw as Record<string, unknown>;
  const path = r['Path'];
  if (typeof path !== 'string') return `Path ${show(path)} is not a string`;
  const pathProblem = exposePathProblem(path);
  if (pathProblem !== undefined) return `Path ${show(path)} ${pathProblem}`;
  const listenerRaw = field(r, 'ListenerPort', 'listener_port');
  const listenerPort = readPort(listenerRaw);
  if (listenerPort === undefined) return `ListenerPort ${show(listenerRaw ?? 0)} of path ${show(path)} is not a port (1..${MAX_PORT})`;
  const localRaw = field(r, 'LocalPathPort', 'local_path_port');
  // Consul leaves an unset LocalPathPort 0; Envoy would then forward to port 0. The app's port is the sensible reading.
  const localPathPort = localRaw === undefined || localRaw === null || localRaw === 0 ? localServicePort : readPort(localRaw);
  if (localPathPort === undefined) return `LocalPathPort ${show(localRaw)} of path ${show(path)} is not a port (1..${MAX_PORT})`;
  const protocolRaw = r['Protocol'];
  let protocol: ExposeProtocol = DEFAULT_EXPOSE_PROTOCOL;
  if (protocolRaw !== undefined && protocolRaw !== null && protocolRaw !== '') {
    const lower = typeof protocolRaw === 'string' ? protocolRaw.toLowerCase() : undefined;
    const found = EXPOSE_PROTOCOLS.find((p) => p === lower);
    if (found === undefined) return `Protocol ${show(protocolRaw)} of path ${show(path)} is not one of ${EXPOSE_PROTOCOLS.join(', ')}`;
    protocol = found;
  }
  return { source: item, listenerPort, path, localPathPort, protocol };
}

/**
 * `Proxy.Expose` as the agent returns it; undefined when it exposes nothing. Never throws on bad
 * values: each bad path is refused (`refused`, naming the value) and the rest applies.
 */
export function parseExpose(raw: Record<string, unknown> | null | undefined, localServicePort: number): ExposeConfig | undefined {
  if (raw === null || raw === undefined) return undefined;
  const refused: ExposeProblem[] = [];
  const checksRaw = raw['Checks'];
  let checks = false;
  if (typeof checksRaw === 'boolean') checks = checksRaw;
  else if (checksRaw !== undefined && checksRaw !== null) refused.push({ item: 'Expose.Checks', reason: `Expose.Checks ${show(checksRaw)} is not a boolean; checks are not exposed` });
  const pathsRaw = raw['Paths'];
  const paths: ExposePath[] = [];
  if (Array.isArray(pathsRaw)) {
    pathsRaw.forEach((p, i) => {
      const item = `Expose.Paths[${i}]`;
      const parsed = parseExposePath(p, item, localServicePort);
      if (typeof parsed === 'string') refused.push({ item, reason: `${item} ${parsed}; it is left out` });
      else paths.push(parsed);
    });
  } else if (pathsRaw !== undefined && pathsRaw !== null) {
    refused.push({ item: 'Expose.Paths', reason: `Expose.Paths ${show(pathsRaw)} is not a list; no path is exposed` });
  }
  if (!checks && paths.length === 0 && refused.length === 0) return undefined;
  return { checks, paths, ...(refused.length > 0 && { refused }) };
}

/** `HTTP GET http://...: 200 OK Output: ...` (a response) or `Get "http://...": dial tcp ...` (no response). */
const RESPONSE_OUTPUT = /^HTTP [A-Z]+ (\S+): /;
const ERROR_OUTPUT = /^[A-Z][a-z]+ "([^"]+)": /;

/** The path of the URL the agent reports in an HTTP check's output; undefined when there is none yet. */
export function checkOutputPath(output: string): string | undefined {
  const url = RESPONSE_OUTPUT.exec(output)?.[1] ?? ERROR_OUTPUT.exec(output)?.[1];
  if (url === undefined) return undefined;
  try {
    // `http://:21500/health` (an empty proxy address) is not a valid WHATWG URL: give it a host.
    const parsed = new URL(url.replace(/^(https?:\/\/)(:)/, '$1localhost$2'));
    return parsed.pathname === '' ? '/' : parsed.pathname;
  } catch {
    return undefined;
  }
}

/** One entry of GET /v1/agent/checks, as far as exposing it goes. */
export interface AgentCheckJson {
  CheckID: string;
  ServiceID: string;
  Type: string;
  ExposedPort: number;
  Output: string;
}

/** The checks of `serviceId` that the agent sends through the sidecar, sorted by check ID. */
export function exposedChecksOf(checks: readonly AgentCheckJson[], serviceId: string): ExposedCheck[] {
  const exposed: ExposedCheck[] = [];
  for (const c of checks) {
    if (c.ServiceID !== serviceId || c.ExposedPort <= 0) continue;
    if (c.Type === 'grpc') exposed.push({ checkId: c.CheckID, type: 'grpc', exposedPort: c.ExposedPort, path: GRPC_HEALTH_CHECK_PATH });
    else if (c.Type === 'http') exposed.push({ checkId: c.CheckID, type: 'http', exposedPort: c.ExposedPort, path: checkOutputPath(c.Output) });
  }
  return exposed.sort((a, b) => (a.checkId < b.checkId ? -1 : a.checkId > b.checkId ? 1 : 0));
}
