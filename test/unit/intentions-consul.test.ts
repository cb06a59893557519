/** intentionsMatch: the HTTP client against a scripted agent, and the in-process fake. */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { FakeConsulAgentApi } from '../../devtools/fake-consul.js';
import { isHaproxyConnectError } from '../../src/errors.js';

interface Reply {
  status?: number;
  headers: Record<string, string>;
  body: string;
}

let server: Server;
let client: ConsulHttpClient;
let reply: Reply;
const seen: URL[] = [];

before(async () => {
  server = createServer((req, res) => {
    seen.push(new URL(req.url ?? '/', 'http://agent'));
    res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers }).end(reply.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  client = new ConsulHttpClient({ address: `127.0.0.1:${(server.address() as AddressInfo).port}`, waitSeconds: 5 });
});
after(async () => {
  await client.close();
  await new Promise<void>((r) => server.close(() => r()));
});

// Captured from Consul 1.16.2 (`consul agent -dev`): one L4 exact, one wildcard, one L7 intention.
const CONSUL_BODY = JSON.stringify({
  api: [
    { SourceNS: 'default', SourceName: 'web', DestinationNS: 'default', DestinationName: 'api', SourceType: 'consul', Action: 'allow', Precedence: 9, CreateIndex: 18, ModifyIndex: 18 },
    {
      SourceNS: 'default',
      SourceName: 'db',
      DestinationNS: 'default',
      DestinationName: 'api',
      SourceType: 'consul',
      Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/x' } }],
      Precedence: 9,
      CreateIndex: 20,
      ModifyIndex: 20,
    },
    { SourceNS: 'default', SourceName: '*', DestinationNS: 'default', DestinationName: 'api', SourceType: 'consul', Action: 'deny', Precedence: 8, CreateIndex: 18, ModifyIndex: 18 },
  ],
});

describe('ConsulHttpClient.intentionsMatch', () => {
  test('asks by destination (blocking on the index) and maps intentions and the default policy', async () => {
    reply = { headers: { 'X-Consul-Index': '20', 'X-Consul-Default-Acl-Policy': 'deny' }, body: CONSUL_BODY };
    const signal = new AbortController().signal;
    const first = await client.intentionsMatch({ name: 'api', namespace: '' }, {}, signal);
    assert.equal(first.cursor.index, 20);
    assert.equal(first.value.defaultAllow, false);
    assert.deepEqual(
      first.value.intentions.map((i) => [i.sourceName, i.action, i.permissions.length, i.precedence]),
      [
        ['web', 'allow', 0, 9],
        ['db', '', 1, 9],
        ['*', 'deny', 0, 8],
      ],
    );
    assert.deepEqual(first.value.intentions[0], {
      sourceName: 'web',
      sourceNamespace: 'default',
      sourcePartition: '',
      sourcePeer: '',
      destinationName: 'api',
      destinationNamespace: 'default',
      destinationPartition: '',
      action: 'allow',
      permissions: [],
      precedence: 9,
    });
    const q = seen.at(-1)?.searchParams;
    assert.equal(seen.at(-1)?.pathname, '/v1/connect/intentions/match');
    assert.equal(q?.get('by'), 'destination');
    assert.equal(q?.get('name'), 'api');
    assert.equal(q?.has('index'), false);

    reply = { headers: { 'X-Consul-Index': '21', 'X-Consul-Default-Acl-Policy': 'allow' }, body: '{"api": null}' };
    const second = await client.intentionsMatch({ name: 'api', namespace: 'team' }, first.cursor, signal);
    assert.deepEqual(second.value, { intentions: [], defaultAllow: true });
    assert.equal(seen.at(-1)?.searchParams.get('index'), '20');
    assert.equal(seen.at(-1)?.searchParams.get('wait'), '5s');
    assert.equal(seen.at(-1)?.searchParams.get('ns'), 'team');
  });

  const bad: Array<[string, Reply, RegExp]> = [
    ['a missing default policy header', { headers: { 'X-Consul-Index': '3' }, body: '{"api": []}' }, /X-Consul-Default-ACL-Policy \(missing\)/],
    ['an unknown default policy', { headers: { 'X-Consul-Index': '3', 'X-Consul-Default-Acl-Policy': 'maybe' }, body: '{"api": []}' }, /'maybe'/],
    [
      'an unknown action',
      { headers: { 'X-Consul-Index': '3', 'X-Consul-Default-Acl-Policy': 'allow' }, body: '{"api": [{"SourceName":"a","DestinationName":"api","Action":"perhaps","Precedence":9}]}' },
      /api\[0\]\.Action/,
    ],
  ];
  for (const [what, r, message] of bad) {
    test(`${what} is CONSUL_RESPONSE_INVALID`, async () => {
      reply = r;
      await assert.rejects(
        client.intentionsMatch({ name: 'api', namespace: '' }, {}, new AbortController().signal),
        (e) => isHaproxyConnectError(e, 'CONSUL_RESPONSE_INVALID') && message.test(e.message),
      );
    });
  }
});

describe('FakeConsulAgentApi.intentionsMatch', () => {
  test('unknown destination: no intentions, default allow; set values sorted by precedence; blocking wakes on change', async () => {
    const fake = new FakeConsulAgentApi();
    const signal = new AbortController().signal;
    const target = { name: 'api', namespace: '' };
    const first = await fake.intentionsMatch(target, {}, signal);
    assert.deepEqual(first.value, { intentions: [], defaultAllow: true });
    const blocked = fake.intentionsMatch(target, first.cursor, signal);
    const base = { sourceNamespace: 'default', sourcePartition: '', sourcePeer: '', destinationName: 'api', destinationNamespace: 'default', destinationPartition: '', permissions: [] };
    fake.setIntentions(target, {
      defaultAllow: false,
      intentions: [
        { ...base, sourceName: '*', action: 'deny', precedence: 8 },
        { ...base, sourceName: 'web', action: 'allow', precedence: 9 },
      ],
    });
    const next = await blocked;
    assert.equal(next.value.defaultAllow, false);
    assert.deepEqual(
      next.value.intentions.map((i) => i.sourceName),
      ['web', '*'],
    );
    assert.ok((next.cursor.index ?? 0) > (first.cursor.index ?? 0));
    assert.equal(fake.callsOf('intentionsMatch'), 2);
  });
});
