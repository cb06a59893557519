/**
 * Generators of Envoy matchers and of the raw HTTP/1.1 requests aimed at them, shared by the
 * route (route-acl.test.ts) and permission (permissions-haproxy.test.ts) differentials.
 */
import { connect } from 'node:net';
import fc from 'fast-check';
import type { QueryParamMatch, RouteMatch, ValueMatch } from '../../src/domain/routes.js';

export type Req = { method: string; target: string; headers: ReadonlyArray<readonly [string, string]> };

export function send(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1', () => socket.end(Buffer.from(raw, 'utf8')));
    socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}
export function rawRequest(req: Req): string {
  return `${req.method} ${req.target} HTTP/1.1\r\nhost: t\r\n${req.headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}connection: close\r\n\r\n`;
}

export const NAMES = ['x-a', 'x-b', "x-'#$%&*+.^_`|~"];
export const VALUES = ['1', '2', 'a', 'ab', 'b', 'a,b', '1,1', ',', '', 'x y', '-i', '}', 'v1', 'é', '"q\\', "'#$%"];
export const REGEXES = ['1', 'a.*', '[0-9]+', 'a|ab', '(a,b)?', 'x y', '.*,.*', '[^,]*', '[a-z]*', 'v[0-9]', '', '\\}', '-i'];
export const PATHS = ['/', '/a', '/ab', '/a/', '/a/b', '/A', '/a%20b', '/a;b', '/api/v1', '//a', '/a?', '/a?v', '/a?v=1'];
export const PATH_REGEXES = ['/a', '/a.*', '/a/[a-z]+', '/(a|ab)', '/a%20b', '.*', '/a/?', '/api/v[0-9]+(/.*)?', '/a;b'];
export const PARAMS = ['v=1', 'v=2', 'v', 'v=', 'vv=1', 'a=1', 'v=1=2', 'v=%31', '', 'a;v=1', 'V=1', 'a.b=x'];
export const QUERY_NAMES = ['v', 'vv', 'a', 'a.b', 'V'];
export const QUERY_VALUES = ['1', '2', '', '1=2', '%31', 'x'];
export const QUERY_REGEXES = ['1', '[0-9]+', '', '.*', '1|2', '%31', '1=2', 'x?'];
export const METHODS = ['GET', 'POST', 'get', 'PUT', 'DELETE'];

export const pick = <K extends string>(kinds: readonly K[], values: readonly string[]) => fc.record({ kind: fc.constantFrom(...kinds), value: fc.constantFrom(...values) });
export const valueMatchArb: fc.Arbitrary<ValueMatch> = fc.oneof(fc.constant({ kind: 'present' as const }), pick(['exact', 'prefix', 'suffix'], VALUES), pick(['regex'], REGEXES));
export const headerArb = fc.record({ name: fc.constantFrom(...NAMES), match: valueMatchArb, invert: fc.boolean() });
export const queryMatchArb = fc.oneof(fc.constant({ kind: 'present' as const }), pick(['exact'], QUERY_VALUES), pick(['regex'], QUERY_REGEXES));
export const queryArb: fc.Arbitrary<QueryParamMatch> = fc.record({ name: fc.constantFrom(...QUERY_NAMES), match: queryMatchArb });
export const pathArb = fc.oneof(pick(['exact', 'prefix'], PATHS), pick(['regex'], PATH_REGEXES));
export const routeArb: fc.Arbitrary<RouteMatch> = fc
  .tuple(fc.option(pathArb), fc.subarray(METHODS.slice(0, 4), { maxLength: 2 }), fc.array(headerArb, { maxLength: 2 }), fc.array(queryArb, { maxLength: 2 }))
  .map(([path, methods, headers, queryParams]) => (path === null ? { methods, headers, queryParams } : { path, methods, headers, queryParams }));
export const targetArb = fc
  .tuple(fc.constantFrom(...PATHS.filter((p) => !p.includes('?'))), fc.option(fc.array(fc.constantFrom(...PARAMS), { maxLength: 4 })))
  .map(([path, params]) => (params === null ? path : `${path}?${params.join('&')}`));
export const reqArb: fc.Arbitrary<Req> = fc.record({
  method: fc.constantFrom(...METHODS),
  target: targetArb,
  headers: fc.array(fc.tuple(fc.constantFrom(...NAMES, 'X-A'), fc.constantFrom(...VALUES)), { maxLength: 4 }),
});

/** Requests aimed at one route: its own values, a comma-joined value sent as repeated headers, prefix edges. */
export function nearReq(m: RouteMatch): fc.Arbitrary<Req> {
  const p = m.path;
  const paths = p === undefined || p.kind === 'regex' ? PATHS : [p.value, p.value, `${p.value}b`, `${p.value}/`, p.value.slice(0, -1) || '/'];
  const params = m.queryParams.map((q) => `${q.name}=${q.match.kind === 'exact' ? q.match.value : '1'}`);
  const core = m.headers.flatMap((h) => (h.match.kind === 'present' ? [''] : h.match.value.split(',')).map((part) => [h.name, part] as const));
  const noise = m.headers.flatMap((h) => [[h.name, h.match.kind === 'present' ? 'x' : h.match.value] as const, [h.name.toUpperCase(), '1'] as const]);
  const some = <T>(all: readonly T[], extra: readonly T[]) => fc.oneof({ weight: 3, arbitrary: fc.shuffledSubarray([...all], { minLength: all.length }) }, fc.shuffledSubarray([...all, ...extra]));
  return fc.record({
    method: m.methods.length === 0 ? fc.constantFrom(...METHODS) : fc.oneof({ arbitrary: fc.constantFrom(...m.methods), weight: 4 }, fc.constantFrom(...METHODS)),
    target: fc
      .tuple(fc.constantFrom(...paths), some(params, [...m.queryParams.map((q) => q.name), ...PARAMS.slice(0, 4)]))
      .map(([path, ps]) => (ps.length === 0 ? path : `${path}${path.includes('?') ? '&' : '?'}${ps.join('&')}`)),
    headers: some(core, [...noise, ['x-c', '1'] as const]),
  });
}
