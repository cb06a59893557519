/**
 * The test-side Swagger 2.0 request validator, against the real Data Plane API v2.9 specification:
 * requests the driver sends conform, and each kind of mistake is reported where it is.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { loadSpec, operationId, validateRequest, type RequestToCheck, type Violation } from '../helpers/openapi2.js';

const spec = loadSpec(new URL('../fixtures/dataplaneapi/specification-v2.9.27.json', import.meta.url).pathname);

function check(method: string, path: string, query: Record<string, string> = {}, body?: unknown, contentType?: string): Violation[] {
  const req: RequestToCheck = { method, path, query };
  if (body !== undefined) req.body = body;
  if (contentType !== undefined) req.contentType = contentType;
  return validateRequest(spec, req);
}

function only(violations: Violation[], where: string, message: RegExp): void {
  assert.equal(violations.length, 1, JSON.stringify(violations));
  assert.equal(violations[0]?.where, where);
  assert.match(violations[0]?.message ?? '', message);
}

const SERVERS = '/v2/services/haproxy/runtime/servers';

describe('openapi2: conforming requests', () => {
  test('GET /v2/info', () => {
    assert.deepEqual(check('GET', '/v2/info'), []);
    assert.equal(operationId(spec, 'get', '/v2/info'), 'getInfo');
  });

  test('GET and POST the raw configuration (text body, boolean and integer query parameters)', () => {
    assert.deepEqual(check('GET', '/v2/services/haproxy/configuration/raw', { version: '3' }), []);
    assert.deepEqual(check('GET', '/v2/services/haproxy/configuration/raw', { transaction_id: 'abc' }), []);
    const text = 'global\n  daemon\n';
    const query = { version: '3', skip_reload: 'false', skip_version: 'true', only_validate: 'false', force_reload: 'true' };
    assert.deepEqual(check('POST', '/v2/services/haproxy/configuration/raw', query, text, 'text/plain'), []);
    assert.equal(operationId(spec, 'POST', '/v2/services/haproxy/configuration/raw'), 'postHAProxyConfiguration');
  });

  test('runtime servers: add, replace, delete', () => {
    assert.deepEqual(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: '127.0.0.1', port: 8080 }, 'application/json'), []);
    for (const admin_state of ['ready', 'maint', 'drain']) {
      assert.deepEqual(check('PUT', `${SERVERS}/s1`, { backend: 'b' }, { admin_state }), [], admin_state);
    }
    assert.deepEqual(check('DELETE', `${SERVERS}/s1`, { backend: 'b' }), []);
    assert.equal(operationId(spec, 'DELETE', `${SERVERS}/s1`), 'deleteRuntimeServer');
  });

  test('runtime map entry replace, with a percent-encoded id', () => {
    const path = '/v2/services/haproxy/runtime/maps_entries/10.0.0.1%2F32';
    assert.deepEqual(check('PUT', path, { map: 'intentions.map', force_sync: 'true' }, { value: 'allow' }), []);
    assert.deepEqual(check('PUT', path, { map: 'intentions.map' }, { value: 'allow' }), []);
    assert.equal(operationId(spec, 'PUT', path), 'replaceRuntimeMapEntry');
    // The id pattern excludes '#', so a runtime-API style '#<id>' reference must not be sent.
    only(check('PUT', '/v2/services/haproxy/runtime/maps_entries/%230x55d1', { map: 'm' }, { value: 'v' }), 'path/id', /does not match/);
  });

  test('a literal segment wins over a templated one', () => {
    // The Data Plane API has no such overlap, so a small specification shows the rule.
    const paths = { '/a/{x}/c': { get: { operationId: 'axc' } }, '/{y}/b/c': { get: { operationId: 'ybc' } }, '/a/b/{z}': { get: { operationId: 'abz' } } };
    const overlapping = { swagger: '2.0' as const, basePath: '/v2', paths };
    assert.equal(operationId(overlapping, 'GET', '/v2/a/b/c'), 'abz');
    assert.equal(operationId(overlapping, 'GET', '/v2/a/q/c'), 'axc');
    assert.equal(operationId(overlapping, 'GET', '/v2/q/b/c'), 'ybc');
    assert.equal(operationId(spec, 'GET', '/v2/services/haproxy/runtime/maps_entries'), 'showRuntimeMap');
  });
});

describe('openapi2: violations', () => {
  test('unknown path, path outside basePath, empty templated segment', () => {
    only(check('GET', '/v2/nothing/here'), 'path', /no path/);
    only(check('GET', '/v3/info'), 'path', /no path/);
    only(check('GET', `${SERVERS}/`, { backend: 'b' }), 'path', /no path/);
    assert.equal(operationId(spec, 'GET', '/v2/nothing'), undefined);
  });

  test('a method the path does not have', () => {
    only(check('PATCH', `${SERVERS}/s1`, { backend: 'b' }), 'method', /PATCH/);
    only(check('BREW', '/v2/info'), 'method', /BREW/);
  });

  test('missing required query parameter', () => {
    only(check('DELETE', `${SERVERS}/s1`), 'query/backend', /missing required/);
  });

  test('unknown query parameter', () => {
    only(check('DELETE', `${SERVERS}/s1`, { backend: 'b', force: 'true' }), 'query/force', /unknown query parameter force/);
  });

  test('query value against the pattern, integer and boolean types', () => {
    only(check('DELETE', `${SERVERS}/s1`, { backend: 'b\nc' }), 'query/backend', /does not match/);
    only(check('DELETE', `${SERVERS}/s1`, { backend: 'a;b' }), 'query/backend', /does not match/);
    only(check('GET', '/v2/services/haproxy/configuration/raw', { version: '1.5' }), 'query/version', /not an integer/);
    only(check('POST', '/v2/services/haproxy/configuration/raw', { skip_reload: '1' }, 'global\n', 'text/plain'), 'query/skip_reload', /"true" or "false"/);
  });

  test('path value against the pattern, after URL decoding', () => {
    only(check('DELETE', `${SERVERS}/a%0Ab`, { backend: 'b' }), 'path/name', /does not match/);
    only(check('DELETE', `${SERVERS}/%E0%A4%A`, { backend: 'b' }), 'path/name', /percent-encoding/);
  });

  test('body: enum, type, range, null, required property', () => {
    only(check('PUT', `${SERVERS}/s1`, { backend: 'b' }, { admin_state: 'bogus' }), 'body/admin_state', /not one of/);
    only(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: '127.0.0.1', port: '8080' }), 'body/port', /expected integer, got string/);
    only(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: '127.0.0.1', port: 80.5 }), 'body/port', /expected integer/);
    only(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: '127.0.0.1', port: 70000 }), 'body/port', /maximum/);
    // port is x-nullable, address is not.
    assert.deepEqual(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: '127.0.0.1', port: null }), []);
    only(check('POST', SERVERS, { backend: 'b' }, { name: 's1', address: null }), 'body/address', /null/);
    only(check('POST', SERVERS, { backend: 'b' }, { name: 's1', ssl_certificate: 'a b' }), 'body/ssl_certificate', /does not match/);
    only(check('PUT', '/v2/services/haproxy/runtime/maps_entries/k', { map: 'm' }, {}), 'body/value', /required property/);
    only(check('PUT', `${SERVERS}/s1`, { backend: 'b' }, [{ admin_state: 'ready' }]), 'body', /expected object, got array/);
  });

  test('body: missing, undeclared, wrong content type', () => {
    only(check('PUT', `${SERVERS}/s1`, { backend: 'b' }), 'body', /missing required body/);
    only(check('DELETE', `${SERVERS}/s1`, { backend: 'b' }, {}), 'body', /declares no body/);
    only(check('POST', '/v2/services/haproxy/configuration/raw', {}, 'global\n', 'application/json'), 'contentType', /application\/json/);
    only(check('POST', '/v2/services/haproxy/configuration/raw', {}, { data: 'x' }), 'body', /expected string, got object/);
  });

  test('additionalProperties: false and array items, on a real definition', () => {
    const definitions = spec.definitions ?? {};
    const closed = Object.entries(definitions).find(([, schema]) => schema.additionalProperties === false && schema.properties !== undefined);
    assert.ok(closed, 'the specification has a definition with additionalProperties: false');
    const violations = validateRequest(
      { ...spec, paths: { '/x': { post: { parameters: [{ name: 'd', in: 'body', schema: { type: 'array', items: { $ref: `#/definitions/${closed[0]}` } } }] } } } },
      { method: 'POST', path: '/v2/x', query: {}, body: [{ not_a_property: 1 }] },
    );
    assert.ok(
      violations.some((v) => v.where === 'body/0/not_a_property' && /additionalProperties/.test(v.message)),
      JSON.stringify(violations),
    );
  });
});

describe('openapi2: robustness', () => {
  test('validateRequest never throws, whatever the request', () => {
    const segment = fc.oneof(fc.constantFrom('v2', 'services', 'haproxy', 'runtime', 'servers', 'maps_entries', 'configuration', 'raw', 'info', 'constructor', '%', '%ZZ'), fc.string());
    const path = fc.array(segment, { maxLength: 7 }).map((segments) => `/${segments.join('/')}`);
    const method = fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'get', 'constructor', '__proto__');
    const key = fc.oneof(fc.constantFrom('backend', 'version', 'map', 'force_sync', 'skip_reload', 'constructor', '__proto__'), fc.string());
    const query = fc.dictionary(key, fc.string(), { maxKeys: 4 });
    const body = fc.option(fc.oneof(fc.anything(), fc.record({ admin_state: fc.anything(), port: fc.anything(), value: fc.anything() })), { nil: undefined });
    fc.assert(
      fc.property(method, path, query, body, fc.option(fc.string(), { nil: undefined }), (m, p, q, b, contentType) => {
        const violations = validateRequest(spec, { method: m, path: p, query: q, body: b, contentType });
        assert.ok(Array.isArray(violations));
      }),
      { numRuns: 300 },
    );
  });
});
