/**
 * Consul's SPIFFE IDs: parse the forms Consul issues, reject everything else, and format service
 * IDs byte for byte as Consul does (the HAProxy ACL matches the URI's exact DER bytes).
 *
 * Parsing follows Consul's connect.ParseCertURI: match the raw (still escaped) path segment by
 * segment, then path-unescape each segment. Formatting follows Go's url.URL.String() for a path
 * built with fmt.Sprintf, i.e. Go's `encodePath` escaping (plus '/', which a segment cannot hold).
 */
import { HaproxyConnectError } from '../errors.js';
import { DEFAULT_NAMESPACE, DEFAULT_PARTITION } from '../domain/consul.js';

export const SPIFFE_SCHEME = 'spiffe://';

export interface ServiceSpiffeId {
  kind: 'service';
  trustDomain: string;
  namespace: string;
  partition: string;
  datacenter: string;
  service: string;
}

export interface AgentSpiffeId {
  kind: 'agent';
  trustDomain: string;
  datacenter: string;
  node: string;
}

export type SpiffeId = ServiceSpiffeId | AgentSpiffeId;

/** SPIFFE trust domains: lowercase letters, digits, '.', '-', '_'. */
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
/** RFC 3986 pchar, with '%' checked separately: unreserved / sub-delims / ':' / '@'. */
const RAW_SEGMENT = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+$/;

function invalid(uri: string, why: string): HaproxyConnectError {
  return new HaproxyConnectError('SPIFFE_ID_INVALID', `SPIFFE ID ${JSON.stringify(uri)} is invalid: ${why}`);
}

function unescapeSegment(uri: string, raw: string): string {
  if (!RAW_SEGMENT.test(raw)) throw invalid(uri, `path segment ${JSON.stringify(raw)} has characters not allowed in a URI path`);
  try {
    return decodeURIComponent(raw);
  } catch {
    throw invalid(uri, `path segment ${JSON.stringify(raw)} has a malformed percent-encoding`);
  }
}

/** Parses a Consul service or agent SPIFFE ID; throws SPIFFE_ID_INVALID for anything else. */
export function parseSpiffeId(uri: string): SpiffeId {
  if (!uri.startsWith(SPIFFE_SCHEME)) throw invalid(uri, `the scheme must be '${SPIFFE_SCHEME}'`);
  const rest = uri.slice(SPIFFE_SCHEME.length);
  if (rest.includes('?')) throw invalid(uri, 'a query is not allowed');
  if (rest.includes('#')) throw invalid(uri, 'a fragment is not allowed');
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  if (authority.includes('@')) throw invalid(uri, 'userinfo is not allowed');
  if (authority.includes(':')) throw invalid(uri, 'a port is not allowed');
  if (authority === '') throw invalid(uri, 'the trust domain is empty');
  if (!TRUST_DOMAIN.test(authority)) throw invalid(uri, `trust domain ${JSON.stringify(authority)} has invalid characters`);
  if (slash === -1) throw invalid(uri, 'the path is empty');

  const rawSegments = rest.slice(slash + 1).split('/');
  if (rawSegments.some((s) => s === '')) throw invalid(uri, 'empty path segments are not allowed');
  const s = rawSegments.map((raw) => unescapeSegment(uri, raw));
  const trustDomain = authority;
  const at = (i: number): string => s[i] ?? '';
  // Keywords are compared on the raw segments, as Consul's regexp does on the escaped path.
  const r = rawSegments;

  if (s.length === 6 && r[0] === 'agent' && r[1] === 'client' && r[2] === 'dc' && r[4] === 'id') {
    return { kind: 'agent', trustDomain, datacenter: at(3), node: at(5) };
  }
  if (s.length === 6 && r[0] === 'ns' && r[2] === 'dc' && r[4] === 'svc') {
    return { kind: 'service', trustDomain, partition: DEFAULT_PARTITION, namespace: at(1), datacenter: at(3), service: at(5) };
  }
  if (s.length === 8 && r[0] === 'ap' && r[2] === 'ns' && r[4] === 'dc' && r[6] === 'svc') {
    return { kind: 'service', trustDomain, partition: at(1), namespace: at(3), datacenter: at(5), service: at(7) };
  }
  throw invalid(uri, 'not a Consul service (/[ap/<p>/]ns/<ns>/dc/<dc>/svc/<name>) or agent (/agent/client/dc/<dc>/id/<node>) ID');
}

/** Go's url `encodePath` escaping of one segment (uppercase hex), with '/' escaped too. */
export function escapeSegment(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~$&+,:;=@]/.test(c)) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export interface ServiceIdentity {
  trustDomain: string;
  namespace?: string;
  partition?: string;
  datacenter: string;
  service: string;
}

/** Formats a service SPIFFE ID as Consul writes it (`/ap/<p>` only for a non-default partition). */
export function serviceSpiffeId(id: ServiceIdentity): string {
  const ns = id.namespace === undefined || id.namespace === '' ? DEFAULT_NAMESPACE : id.namespace;
  const ap = id.partition === undefined || id.partition === '' ? DEFAULT_PARTITION : id.partition;
  const prefix = ap === DEFAULT_PARTITION ? '' : `/ap/${escapeSegment(ap)}`;
  return `${SPIFFE_SCHEME}${id.trustDomain}${prefix}/ns/${escapeSegment(ns)}/dc/${escapeSegment(id.datacenter)}/svc/${escapeSegment(id.service)}`;
}

/** Formats an agent SPIFFE ID as Consul writes it. */
export function agentSpiffeId(id: { trustDomain: string; datacenter: string; node: string }): string {
  return `${SPIFFE_SCHEME}${id.trustDomain}/agent/client/dc/${escapeSegment(id.datacenter)}/id/${escapeSegment(id.node)}`;
}

/** Formats any parsed SPIFFE ID back to its canonical string. */
export function formatSpiffeId(id: SpiffeId): string {
  return id.kind === 'agent' ? agentSpiffeId(id) : serviceSpiffeId(id);
}
