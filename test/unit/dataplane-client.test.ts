import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DataplaneClient, type DataplaneExchange } from '../../src/dataplane/client.js';
import { isHaproxyConnectError } from '../../src/errors.js';

const PASSWORD = 'pw-SECRET-123';

/** What the fake API saw of one request. */
interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let dir: string;
let socketPath: string;
let server: http.Server;
let client: DataplaneClient;
const seen: Seen[] = [];
const exchanges: DataplaneExchange[] = [];

/** A fake Data Plane API: answers by path, and records every request it reads. */
function answer(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
  const path = new URL(req.url ?? '/', 'http://dataplane').pathname;
  switch (path) {
    case '/v2/services/haproxy/runtime/servers':
      res.writeHead(200, { 'content-type': 'application/json' }).end('[{"name":"s0"}]');
      return;
    case '/v2/services/haproxy/configuration/raw':
      res.writeHead(202, { 'content-type': 'text/plain', 'reload-id': '42' }).end(body);
      return;
    case '/v2/unauthorized':
      // What v2.9.27 answers to a wrong password: the password itself, echoed.
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 401, message: `invalid password: ${PASSWORD}` }));
      return;
    case '/v2/bad':
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 400, message: `bad thing ${PASSWORD}` }));
      return;
    case '/v2/hang':
      return; // never answers
    default:
      res.writeHead(404).end('{"code":404,"message":"not found"}');
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hc-dataplane-client-'));
  socketPath = join(dir, 'dataplane.sock');
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      answer(req, res, body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  client = new DataplaneClient({ socketPath, user: 'u', password: PASSWORD, onExchange: (e) => exchanges.push(e) });
});

after(async () => {
  client.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

function lastSeen(): Seen {
  const last = seen.at(-1);
  assert.ok(last !== undefined, 'the fake API saw a request');
  return last;
}

describe('DataplaneClient.send', () => {
  test('Basic credentials, query parameters encoded, the answer returned', async () => {
    const recorded = exchanges.length;
    const res = await client.send({ method: 'GET', path: '/services/haproxy/runtime/servers', query: { backend: 'up db/x&y=1' } });
    assert.equal(res.status, 200);
    assert.equal(res.body, '[{"name":"s0"}]');
    assert.equal(res.headers['content-type'], 'application/json');
    const req = lastSeen();
    assert.equal(req.method, 'GET');
    assert.equal(req.headers.authorization, `Basic ${Buffer.from(`u:${PASSWORD}`).toString('base64')}`);
    const url = new URL(req.url, 'http://dataplane');
    assert.equal(url.pathname, '/v2/services/haproxy/runtime/servers');
    assert.equal(url.searchParams.get('backend'), 'up db/x&y=1');
    assert.ok(!req.url.includes(' ') && !req.url.includes('&y='), `query is encoded: ${req.url}`);
    assert.equal(req.headers['content-type'], undefined, 'no body, no content type');
    assert.equal(exchanges.length, recorded + 1);
    assert.deepEqual(exchanges.at(-1), {
      request: { method: 'GET', path: '/services/haproxy/runtime/servers', query: { backend: 'up db/x&y=1' } },
      response: { status: 200, body: '[{"name":"s0"}]' },
    });
  });

  test('a JSON body is sent as application/json', async () => {
    const json = { admin_state: 'maint', port: 21000, address: '10.0.0.1' };
    const res = await client.send({ method: 'PUT', path: '/services/haproxy/runtime/servers', query: { backend: 'b' }, body: { json } });
    assert.equal(res.status, 200);
    const req = lastSeen();
    assert.equal(req.method, 'PUT');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['content-length'], String(Buffer.byteLength(req.body)));
    assert.deepEqual(JSON.parse(req.body), json);
    assert.deepEqual(exchanges.at(-1)?.request, {
      method: 'PUT',
      path: '/services/haproxy/runtime/servers',
      query: { backend: 'b' },
      contentType: 'application/json',
      body: JSON.stringify(json),
    });
  });

  test('a text body is sent with its content type', async () => {
    const text = 'global\n  log stdout format raw local0 # café\n';
    const res = await client.send({ method: 'POST', path: '/services/haproxy/configuration/raw', query: { version: '3', skip_reload: 'true' }, body: { text, contentType: 'text/plain' } });
    assert.equal(res.status, 202);
    assert.equal(res.body, text, 'the fake echoes the body');
    assert.equal(res.headers['reload-id'], '42');
    const req = lastSeen();
    assert.equal(req.method, 'POST');
    assert.equal(req.headers['content-type'], 'text/plain');
    assert.equal(req.body, text);
    assert.equal(new URL(req.url, 'http://dataplane').search, '?version=3&skip_reload=true');
    assert.deepEqual(exchanges.at(-1), {
      request: { method: 'POST', path: '/services/haproxy/configuration/raw', query: { version: '3', skip_reload: 'true' }, contentType: 'text/plain', body: text },
      response: { status: 202, body: text },
    });
  });

  test('a non-2xx answer is returned, not thrown', async () => {
    const res = await client.send({ method: 'DELETE', path: '/services/haproxy/runtime/servers/nope', query: { backend: 'b' } });
    assert.equal(res.status, 404);
  });

  test('401 is DATAPLANE_API without the echoed password, and is not recorded', async () => {
    const recorded = exchanges.length;
    await assert.rejects(client.send({ method: 'GET', path: '/unauthorized' }), (err: unknown) => {
      assert.ok(isHaproxyConnectError(err, 'DATAPLANE_API'), `expected DATAPLANE_API, got ${String(err)}`);
      assert.match(err.message, /401/);
      assert.match(err.message, /GET \/unauthorized/);
      assert.ok(!err.message.includes(PASSWORD), err.message);
      assert.ok(!String(err.stack).includes(PASSWORD));
      return true;
    });
    assert.equal(exchanges.length, recorded, 'onExchange did not see the 401');
  });
});

describe('DataplaneClient.expect', () => {
  test('an expected status passes through', async () => {
    const res = await client.expect({ method: 'GET', path: '/services/haproxy/runtime/servers', query: { backend: 'b' } }, [200], 'list servers');
    assert.equal(res.status, 200);
  });

  test("another status is DATAPLANE_API naming the request and the API's message, password masked", async () => {
    await assert.rejects(client.expect({ method: 'PUT', path: '/bad', body: { json: {} } }, [200], 'do the bad thing'), (err: unknown) => {
      assert.ok(isHaproxyConnectError(err, 'DATAPLANE_API'), `expected DATAPLANE_API, got ${String(err)}`);
      assert.ok(err.message.includes('do the bad thing'), err.message);
      assert.ok(err.message.includes('PUT /bad'), err.message);
      assert.ok(err.message.includes('400 bad thing ***'), err.message);
      assert.ok(!err.message.includes(PASSWORD), err.message);
      return true;
    });
  });
});

describe('DataplaneClient failures', () => {
  test('a missing socket is DATAPLANE_API naming the socket', async () => {
    const missing = join(dir, 'missing.sock');
    const lost = new DataplaneClient({ socketPath: missing, user: 'u', password: PASSWORD });
    try {
      await assert.rejects(lost.send({ method: 'GET', path: '/info' }), (err: unknown) => {
        assert.ok(isHaproxyConnectError(err, 'DATAPLANE_API'), `expected DATAPLANE_API, got ${String(err)}`);
        assert.match(err.message, /Cannot reach/);
        assert.ok(err.message.includes(missing), err.message);
        return true;
      });
    } finally {
      lost.close();
    }
  });

  test('an API that never answers is given up on after timeoutMs', async () => {
    const slow = new DataplaneClient({ socketPath, user: 'u', password: PASSWORD, timeoutMs: 200 });
    const started = performance.now();
    try {
      await assert.rejects(slow.send({ method: 'GET', path: '/hang' }), (err: unknown) => {
        assert.ok(isHaproxyConnectError(err, 'DATAPLANE_API'), `expected DATAPLANE_API, got ${String(err)}`);
        assert.match(err.message, /200 ms/);
        return true;
      });
    } finally {
      slow.close();
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 1_000, `gave up after ${Math.round(elapsed)} ms`);
  });

  test('an aborted request rejects', async () => {
    const controller = new AbortController();
    const pending = client.send({ method: 'GET', path: '/hang' }, controller.signal);
    setTimeout(() => controller.abort(new Error('shutdown')), 20);
    await assert.rejects(pending, (err: unknown) => isHaproxyConnectError(err, 'DATAPLANE_API'));
  });
});
