/**
 * ConsulAgentApi over HTTP: one method per agent endpoint haproxy-connect reads, each validating
 * the response with zod at the boundary and returning domain types plus the blocking cursor.
 */
import type { z } from 'zod';
import { intentionFromJson } from './permissions.js';
import { HaproxyConnectError } from '../errors.js';
import type { Intention, IntentionSet } from '../domain/intentions.js';
import { type Chain, DEFAULT_MESH_CONFIG, type Endpoint, type Leaf, type MeshConfig, type ProxyRegistration, type Roots } from '../domain/snapshot.js';
import type { AgentInfo, ChainQuery, ConsulAgentApi, Cursor, IntentionTarget, ProxyServiceSummary, ServiceDefinition, UpstreamQuery, Versioned } from './api.js';
import { readChain } from './discovery-chain.js';
import { ConsulHttp, type ConsulClientOptions, type ConsulResponse } from './http.js';
import { parseProxyRegistration } from './registration.js';
import { leafProblem } from '../domain/certificates.js';
import {
  agentSelfSchema,
  agentServiceSchema,
  agentServicesSchema,
  discoveryChainSchema,
  healthConnectSchema,
  intentionsMatchSchema,
  leafSchema,
  meshConfigEntrySchema,
  agentChecksSchema,
  preparedQueryResultSchema,
  rootsSchema,
  serviceEntrySchema,
} from './schemas.js';
import { DEFAULT_NAMESPACE } from '../domain/consul.js';
import type { ExposedCheck } from '../domain/expose.js';
import { exposedChecksOf } from './expose.js';

export type { ConsulClientOptions } from './http.js';

const INDEX_HEADER = 'x-consul-index';
const CONTENT_HASH_HEADER = 'x-consul-contenthash';
const DEFAULT_WEIGHT = 1;
const DEFAULT_ACL_POLICY_HEADER = 'x-consul-default-acl-policy';

/** A path segment, escaped (service names and IDs are user input). */
function seg(value: string): string {
  return encodeURIComponent(value);
}

/** Builds a query string; `true` values are Consul's bare flags (`?passing&cached`). */
function queryString(params: Array<[string, string | true | undefined]>): string {
  const parts: string[] = [];
  for (const [key, value] of params) {
    if (value === undefined) continue;
    parts.push(value === true ? key : `${key}=${encodeURIComponent(value)}`);
  }
  return parts.join('&');
}

function headerValue(res: ConsulResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Formats a zod issue path the way the JSON looks: `Roots[0].RootCert`. */
function formatIssuePath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

/**
 * Instances from health/connect or a prepared query. Each entry is read on its own: one that does
 * not fit the schema becomes an `invalid` endpoint (translate leaves it out and reports it), so a
 * broken instance never hides the healthy ones.
 */
function toEndpoints(entries: readonly unknown[]): Endpoint[] {
  return entries
    .map((entry, i): Endpoint => {
      const parsed = serviceEntrySchema.safeParse(entry);
      if (!parsed.success) {
        const id = entryId(entry) ?? `entry ${i}`;
        return { id, node: '', address: '', port: 0, weight: DEFAULT_WEIGHT, invalid: `unexpected instance in the answer: ${describeIssue(parsed.error.issues[0])}` };
      }
      const e = parsed.data;
      const statuses = new Set(e.Checks.map((c) => c.Status));
      return {
        id: `${e.Node.Node}/${e.Service.ID}`,
        node: e.Node.Node,
        // Same choice as Consul: the proxy's service address, else its node's address.
        address: e.Service.Address !== '' ? e.Service.Address : e.Node.Address,
        port: e.Service.Port,
        weight: e.Service.Weights?.Passing ?? DEFAULT_WEIGHT,
        // Envoy's rule (agent/xds/endpoints.go): any critical check makes the instance unhealthy;
        // any other status that is not passing (warning, maintenance) is a warning.
        ...(e.Checks.length > 0 && { status: statuses.has('critical') ? 'critical' : [...statuses].some((s) => s !== 'passing') ? 'warning' : 'passing' }),
        ...(e.Service.Weights?.Warning !== undefined && e.Service.Weights.Warning !== null && { warningWeight: e.Service.Weights.Warning }),
      };
    })
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** `<node>/<service id>` of an entry that failed the schema, when those two are readable. */
function entryId(entry: unknown): string | undefined {
  const e = entry as { Node?: { Node?: unknown }; Service?: { ID?: unknown } } | null;
  const node = e?.Node?.Node;
  const id = e?.Service?.ID;
  return typeof node === 'string' && typeof id === 'string' ? `${node}/${id}` : undefined;
}

function describeIssue(issue: z.ZodIssue | undefined): string {
  return issue === undefined ? 'unexpected shape' : `${formatIssuePath(issue.path)}: ${issue.message}`;
}

/** A 404 the caller treats as success (never leaves this module). */
class NotFound extends Error {}

export class ConsulHttpClient implements ConsulAgentApi {
  readonly address: string;
  readonly #http: ConsulHttp;

  constructor(options: ConsulClientOptions) {
    this.#http = new ConsulHttp(options);
    this.address = this.#http.address;
  }

  /** Releases the connection pool (aborts in-flight blocking queries). */
  async close(): Promise<void> {
    await this.#http.close();
  }

  async agentSelf(signal: AbortSignal): Promise<AgentInfo> {
    const path = '/v1/agent/self';
    const res = await this.#http.get(path, '', { signal, blocking: false });
    const body = this.#parse(path, res, agentSelfSchema);
    return { datacenter: body.Config.Datacenter, nodeName: body.Config.NodeName };
  }

  async listProxyServices(signal: AbortSignal): Promise<ProxyServiceSummary[]> {
    const path = '/v1/agent/services';
    const res = await this.#http.get(path, '', { signal, blocking: false });
    const body = this.#parse(path, res, agentServicesSchema);
    return Object.values(body)
      .filter((s) => s.Kind === 'connect-proxy')
      .map((s) => ({
        id: s.ID,
        name: s.Service,
        tags: s.Tags,
        destinationServiceId: s.Proxy?.DestinationServiceID ?? '',
        destinationServiceName: s.Proxy?.DestinationServiceName ?? '',
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async proxyRegistration(proxyId: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<ProxyRegistration>> {
    const path = `/v1/agent/service/${seg(proxyId)}`;
    const blocking = cursor.hash !== undefined && cursor.hash !== '';
    const query = blocking
      ? queryString([
          ['hash', cursor.hash],
          ['wait', this.#wait()],
        ])
      : '';
    const res = await this.#http.get(path, query, {
      signal,
      blocking,
      onNotFound: () => new HaproxyConnectError('SIDECAR_NOT_FOUND', `No service with ID '${proxyId}' is registered on the Consul agent at ${this.address}`),
    });
    const body = this.#parse(path, res, agentServiceSchema);
    const hash = headerValue(res, CONTENT_HASH_HEADER);
    if (hash === undefined || hash === '') {
      throw new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `Consul agent at ${this.address}: GET ${path} returned no X-Consul-ContentHash header`);
    }
    return { value: parseProxyRegistration(body), cursor: { hash } };
  }

  async leaf(serviceName: string, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Leaf>> {
    const path = `/v1/agent/connect/ca/leaf/${seg(serviceName)}`;
    const { res, index } = await this.#indexed(path, [], cursor, signal);
    const body = this.#parse(path, res, leafSchema);
    const value: Leaf = {
      certPem: body.CertPEM,
      privateKeyPem: body.PrivateKeyPEM,
      serialNumber: body.SerialNumber,
      validBefore: body.ValidBefore,
      modifyIndex: body.ModifyIndex,
    };
    // A leaf HAProxy cannot serve never replaces a good one: the watch keeps the last good leaf and retries.
    const problem = leafProblem(value, Date.now());
    if (problem !== undefined) {
      throw new HaproxyConnectError(
        'CERTIFICATE_INVALID',
        `Consul agent at ${this.address}: GET ${path} returned a leaf certificate (serial ${body.SerialNumber || '(none)'}) that cannot be served: ${problem}`,
      );
    }
    return { value, cursor: { index } };
  }

  async roots(cursor: Cursor, signal: AbortSignal): Promise<Versioned<Roots>> {
    const path = '/v1/agent/connect/ca/roots';
    const { res, index } = await this.#indexed(path, [], cursor, signal);
    const body = this.#parse(path, res, rootsSchema);
    return {
      value: {
        trustDomain: body.TrustDomain,
        activeRootId: body.ActiveRootID,
        roots: body.Roots.map((r) => ({
          id: r.ID,
          rootCertPem: r.RootCert,
          intermediateCertsPem: r.IntermediateCerts,
          active: r.Active,
        })),
      },
      cursor: { index },
    };
  }

  async upstreamEndpoints(query: UpstreamQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Endpoint[]>> {
    const path = `/v1/health/connect/${seg(query.destinationName)}`;
    // `cached` serves the agent's background-refreshed cache (blocking queries included), so the
    // mesh keeps working while the servers are unreachable. No `passing`: every instance comes
    // back with its checks, and health is decided locally as Envoy decides it (L7.md §1.4).
    const filter = query.filter === undefined || query.filter === '' ? undefined : query.filter;
    const { res, index } = await this.#indexed(path, [['cached', true], ...this.#scope(query), ['filter', filter]], cursor, signal);
    return { value: toEndpoints(this.#parse(path, res, healthConnectSchema)), cursor: { index } };
  }

  async discoveryChain(query: ChainQuery, cursor: Cursor, signal: AbortSignal): Promise<Versioned<Chain>> {
    const path = `/v1/discovery-chain/${seg(query.name)}`;
    const body = {
      OverrideProtocol: query.overrideProtocol,
      ...(query.overrideConnectTimeoutMs !== undefined && { OverrideConnectTimeout: `${query.overrideConnectTimeoutMs}ms` }),
    };
    const params: Array<[string, string | true | undefined]> = [
      ['compile-dc', query.datacenter === '' ? undefined : query.datacenter],
      ['cached', true],
    ];
    const { res, index } = await this.#indexed(path, params, cursor, signal, body);
    const chain = this.#parse(path, res, discoveryChainSchema).Chain;
    return { value: readChain(query, chain), cursor: { index } };
  }

  async preparedQueryEndpoints(query: UpstreamQuery, signal: AbortSignal): Promise<Endpoint[]> {
    const path = `/v1/query/${seg(query.destinationName)}/execute`;
    const res = await this.#http.get(path, queryString([['connect', 'true'], ...this.#scope(query)]), {
      signal,
      blocking: false,
    });
    return toEndpoints(this.#parse(path, res, preparedQueryResultSchema).Nodes);
  }

  async intentionsMatch(destination: IntentionTarget, cursor: Cursor, signal: AbortSignal): Promise<Versioned<IntentionSet>> {
    const path = '/v1/connect/intentions/match';
    const ns = destination.namespace;
    const { res, index } = await this.#indexed(
      path,
      [
        ['by', 'destination'],
        ['name', destination.name],
        ['ns', ns === '' || ns === DEFAULT_NAMESPACE ? undefined : ns],
      ],
      cursor,
      signal,
    );
    const body = this.#parse(path, res, intentionsMatchSchema);
    const policy = headerValue(res, DEFAULT_ACL_POLICY_HEADER);
    if (policy !== 'allow' && policy !== 'deny') {
      throw new HaproxyConnectError(
        'CONSUL_RESPONSE_INVALID',
        `Consul agent at ${this.address}: GET ${path} returned X-Consul-Default-ACL-Policy ${policy === undefined ? '(missing)' : `'${policy}'`}, expected allow or deny`,
      );
    }
    // The body is keyed by the name we asked for; take every list in case of a renamed key.
    const intentions: Intention[] = Object.values(body).flat().map(intentionFromJson);
    return { value: { intentions, defaultAllow: policy === 'allow' }, cursor: { index } };
  }

  async meshConfig(cursor: Cursor, signal: AbortSignal): Promise<Versioned<MeshConfig>> {
    const path = '/v1/config/mesh/mesh';
    const { res, index } = await this.#indexed(path, [], cursor, signal, undefined, true);
    // No entry: Consul's defaults (the 404 blocks and carries the index like an answer).
    if (res.status === 404) return { value: { ...DEFAULT_MESH_CONFIG }, cursor: { index } };
    const sanitize = this.#parse(path, res, meshConfigEntrySchema).HTTP?.SanitizeXForwardedClientCert;
    if (sanitize !== undefined && sanitize !== null && typeof sanitize !== 'boolean') {
      throw new HaproxyConnectError(
        'CONSUL_RESPONSE_INVALID',
        `Consul agent at ${this.address}: GET ${path} returned the mesh config entry with HTTP.SanitizeXForwardedClientCert ${JSON.stringify(sanitize)}, expected true or false`,
      );
    }
    return { value: { sanitizeXForwardedClientCert: sanitize === true }, cursor: { index } };
  }

  async exposedChecks(serviceId: string, signal: AbortSignal): Promise<ExposedCheck[]> {
    const path = '/v1/agent/checks';
    const res = await this.#http.get(path, '', { signal, blocking: false });
    return exposedChecksOf(Object.values(this.#parse(path, res, agentChecksSchema)), serviceId);
  }

  async registerService(service: ServiceDefinition, signal: AbortSignal): Promise<void> {
    const { check } = service;
    await this.#http.put(
      '/v1/agent/service/register',
      {
        ID: service.id,
        Name: service.name,
        Address: service.address,
        Port: service.port,
        Tags: service.tags,
        Meta: service.meta,
        Check: {
          Name: `${service.name} health`,
          HTTP: check.http,
          Method: 'GET',
          Interval: check.interval,
          Timeout: check.timeout,
          DeregisterCriticalServiceAfter: check.deregisterCriticalServiceAfter,
        },
      },
      { signal },
    );
  }

  async deregisterService(serviceId: string, signal: AbortSignal): Promise<void> {
    // Gone already (the agent's reaper, an operator): nothing left to do.
    await this.#http.put(`/v1/agent/service/deregister/${seg(serviceId)}`, undefined, { signal, onNotFound: () => new NotFound() }).catch((err: unknown) => {
      if (!(err instanceof NotFound)) throw err;
    });
  }

  #wait(): string {
    return `${this.#http.waitSeconds}s`;
  }

  #scope(query: UpstreamQuery): Array<[string, string | undefined]> {
    const ns = query.destinationNamespace;
    return [
      ['dc', query.datacenter === '' ? undefined : query.datacenter],
      ['ns', ns === '' || ns === DEFAULT_NAMESPACE ? undefined : ns],
    ];
  }

  /**
   * An index-based (possibly blocking) read: GET, or POST with `body` (the discovery chain); returns
   * the response and its X-Consul-Index. `allowNotFound`: a 404 is returned too (a config entry).
   */
  async #indexed(
    path: string,
    params: Array<[string, string | true | undefined]>,
    cursor: Cursor,
    signal: AbortSignal,
    body?: unknown,
    allowNotFound = false,
  ): Promise<{ res: ConsulResponse; index: number }> {
    const blocking = cursor.index !== undefined && cursor.index > 0;
    const all: Array<[string, string | true | undefined]> = blocking ? [...params, ['index', String(cursor.index)], ['wait', this.#wait()]] : params;
    const res = body === undefined ? await this.#http.get(path, queryString(all), { signal, blocking, allowNotFound }) : await this.#http.post(path, queryString(all), body, { signal, blocking });
    const raw = headerValue(res, INDEX_HEADER);
    const index = raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(index)) {
      throw new HaproxyConnectError(
        'CONSUL_RESPONSE_INVALID',
        `Consul agent at ${this.address}: GET ${path} returned X-Consul-Index ${raw === undefined ? '(missing)' : `'${raw}'`}, expected a whole number`,
      );
    }
    return { res, index };
  }

  #parse<S extends z.ZodType>(path: string, res: ConsulResponse, schema: S): z.output<S> {
    let json: unknown;
    try {
      json = JSON.parse(res.body);
    } catch (err) {
      throw new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `Consul agent at ${this.address}: GET ${path} returned invalid JSON: ${(err as Error).message}`, { cause: err });
    }
    const result = schema.safeParse(json);
    if (!result.success) {
      const detail = describeIssue(result.error.issues[0]);
      throw new HaproxyConnectError('CONSUL_RESPONSE_INVALID', `Consul agent at ${this.address}: GET ${path} returned an unexpected response: ${detail}`);
    }
    return result.data;
  }
}
