/**
 * The mesh config entry and the XFCC element against a real Consul 1.16.2 dev agent with ACLs
 * (default deny): a sidecar's token (a service identity, i.e. service:write) and even the anonymous
 * token read the entry (MeshConfigEntry.CanRead allows all); no entry is a 404 that blocks like an
 * answer; a write wakes the blocking query; a delete is the defaults again. And the element of a
 * leaf the agent issues: its URI SAN, an empty subject, its own hash.
 */
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ConsulDevAgent, registerMeshService } from '../../devtools/consul-dev-agent.js';
import { freePorts } from '../../devtools/ports.js';
import { ConsulHttpClient } from '../../src/consul/client.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { xfccElement } from '../../src/intentions/xfcc.js';

const ROOT_TOKEN = 'b6f3c0de-0000-4000-8000-000000000001';

let agent: ConsulDevAgent;
let sidecarToken: string;
const clients: ConsulHttpClient[] = [];

function client(token: string | undefined): ConsulHttpClient {
  const c = new ConsulHttpClient({ address: agent.httpAddr, ...(token !== undefined && { token }), waitSeconds: 5 });
  clients.push(c);
  return c;
}

describe('mesh config entry and XFCC with a real Consul 1.16.2 agent (ACLs on, default deny)', () => {
  before(async () => {
    agent = await ConsulDevAgent.start({
      token: ROOT_TOKEN,
      extraConfig: `acl { enabled = true, default_policy = "deny", tokens { initial_management = "${ROOT_TOKEN}", agent = "${ROOT_TOKEN}" } }`,
    });
    const [app, sidecar] = (await freePorts(2)) as [number, number];
    await registerMeshService(agent, { id: 'web', name: 'web', port: app, sidecarPort: sidecar, protocol: 'http' });
    sidecarToken = ((await agent.put('/v1/acl/token', { ServiceIdentities: [{ ServiceName: 'web' }] })) as { SecretID: string }).SecretID;
  });
  after(async () => {
    for (const c of clients) await c.close();
    await agent?.stop();
  });

  test("no entry, then a write, then a delete, read with the sidecar's token through a blocking query", async () => {
    const consul = client(sidecarToken);
    const signal = new AbortController().signal;
    const none = await consul.meshConfig({}, signal);
    assert.deepEqual(none.value, { sanitizeXForwardedClientCert: false });
    assert.ok((none.cursor.index ?? 0) > 0, 'the 404 carries X-Consul-Index');

    const blocked = consul.meshConfig(none.cursor, signal);
    await agent.put('/v1/config', { Kind: 'mesh', HTTP: { SanitizeXForwardedClientCert: true } });
    const written = await blocked;
    assert.deepEqual(written.value, { sanitizeXForwardedClientCert: true });
    assert.ok((written.cursor.index ?? 0) > (none.cursor.index ?? 0));

    // The anonymous token (no token at all) reads it too: no ACL rule guards the mesh entry.
    assert.deepEqual((await client(undefined).meshConfig({}, signal)).value, { sanitizeXForwardedClientCert: true });

    const deleted = consul.meshConfig(written.cursor, signal);
    const res = await agent.fetch('/v1/config/mesh/mesh', { method: 'DELETE' });
    assert.ok(res.ok);
    assert.deepEqual((await deleted).value, { sanitizeXForwardedClientCert: false });
  });

  test('a 403 comes only from a token the agent does not know (as for every other endpoint)', async () => {
    await assert.rejects(
      client('00000000-0000-4000-8000-000000000bad').meshConfig({}, new AbortController().signal),
      (err: unknown) => isHaproxyConnectError(err, 'CONSUL_FORBIDDEN') && /ACL not found/.test(err.message),
    );
  });

  test('the element of a leaf the agent issues: its SPIFFE URI, an empty subject, the SHA-256 of its DER', async () => {
    const leaf = await agent.get<{ CertPEM: string }>('/v1/agent/connect/ca/leaf/web');
    const roots = await agent.get<{ TrustDomain: string }>('/v1/agent/connect/ca/roots');
    const der = new X509Certificate(leaf.CertPEM).raw;
    const element = xfccElement(der, `spiffe://${roots.TrustDomain}/ns/default/dc/dc1/svc/api`);
    assert.ok(element.startsWith(`By=spiffe://${roots.TrustDomain}/ns/default/dc/dc1/svc/api;Hash=${createHash('sha256').update(der).digest('hex')};Cert="-----BEGIN%20CERTIFICATE-----%0A`), element);
    assert.ok(element.endsWith(`-----END%20CERTIFICATE-----%0A";Subject="";URI=spiffe://${roots.TrustDomain}/ns/default/dc/dc1/svc/web`), element);
  });
});
