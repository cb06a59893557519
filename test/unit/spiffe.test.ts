import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { isHaproxyConnectError } from '../../src/errors.js';
import { spiffeIdOfCertificate, splitSubjectAltName, uriSansOf } from '../../src/spiffe/san.js';
import { agentSpiffeId, escapeSegment, formatSpiffeId, parseSpiffeId, serviceSpiffeId, type SpiffeId } from '../../src/spiffe/spiffe-id.js';

const TD = '11111111-2222-3333-4444-555555555555.consul';

describe('parseSpiffeId', () => {
  const valid: Array<[string, SpiffeId]> = [
    [`spiffe://${TD}/ns/default/dc/dc1/svc/web`, { kind: 'service', trustDomain: TD, partition: 'default', namespace: 'default', datacenter: 'dc1', service: 'web' }],
    [`spiffe://${TD}/ap/part1/ns/team/dc/dc-2/svc/api_v2`, { kind: 'service', trustDomain: TD, partition: 'part1', namespace: 'team', datacenter: 'dc-2', service: 'api_v2' }],
    [`spiffe://${TD}/agent/client/dc/dc1/id/node-1`, { kind: 'agent', trustDomain: TD, datacenter: 'dc1', node: 'node-1' }],
    // Segments are path-unescaped, as Consul's ParseCertURI does.
    [`spiffe://${TD}/ns/default/dc/dc1/svc/we%20b%2Fx`, { kind: 'service', trustDomain: TD, partition: 'default', namespace: 'default', datacenter: 'dc1', service: 'we b/x' }],
  ];
  for (const [uri, expected] of valid) {
    test(`accepts ${uri}`, () => assert.deepEqual(parseSpiffeId(uri), expected));
  }

  const invalid = [
    '',
    'https://td/ns/default/dc/dc1/svc/web',
    'SPIFFE://td/ns/default/dc/dc1/svc/web',
    'spiffe:/td/ns/default/dc/dc1/svc/web',
    'spiffe://td/ns/default/dc/dc1/svc/web?x=1',
    'spiffe://td/ns/default/dc/dc1/svc/web#frag',
    'spiffe://user@td/ns/default/dc/dc1/svc/web',
    'spiffe://td:8443/ns/default/dc/dc1/svc/web',
    'spiffe:///ns/default/dc/dc1/svc/web',
    'spiffe://TD/ns/default/dc/dc1/svc/web',
    'spiffe://td',
    'spiffe://td/',
    'spiffe://td/ns/default/dc/dc1/svc/web/',
    'spiffe://td/ns//dc/dc1/svc/web',
    'spiffe://td//ns/default/dc/dc1/svc/web',
    'spiffe://td/ns/default/dc/dc1/svc/web/extra',
    'spiffe://td/ns/default/dc/dc1/svc',
    'spiffe://td/ns/default/dc/dc1/gateway/web',
    'spiffe://td/ap/p/agent/client/dc/dc1/id/n',
    'spiffe://td/agent/server/dc/dc1/id/n',
    'spiffe://td/ns/default/dc/dc1/svc/we b',
    'spiffe://td/ns/default/dc/dc1/svc/web%zz',
    'spiffe://td/ns/default/dc/dc1/svc/web%C3',
    'spiffe://td/%6Es/default/dc/dc1/svc/web',
    'spiffe://td/ns/default/dc/dc1/svc/web, URI:spiffe://evil/ns/default/dc/dc1/svc/admin',
  ];
  for (const uri of invalid) {
    test(`rejects ${JSON.stringify(uri)}`, () => {
      assert.throws(
        () => parseSpiffeId(uri),
        (err: unknown) => isHaproxyConnectError(err, 'SPIFFE_ID_INVALID') && err.message.includes(JSON.stringify(uri)),
      );
    });
  }
});

describe('formatting', () => {
  test('service IDs as Consul writes them', () => {
    assert.equal(serviceSpiffeId({ trustDomain: TD, datacenter: 'dc1', service: 'web' }), `spiffe://${TD}/ns/default/dc/dc1/svc/web`);
    assert.equal(serviceSpiffeId({ trustDomain: TD, partition: 'default', namespace: 'ns1', datacenter: 'dc1', service: 'web' }), `spiffe://${TD}/ns/ns1/dc/dc1/svc/web`);
    assert.equal(serviceSpiffeId({ trustDomain: TD, partition: 'p1', namespace: 'default', datacenter: 'dc1', service: 'web' }), `spiffe://${TD}/ap/p1/ns/default/dc/dc1/svc/web`);
    assert.equal(agentSpiffeId({ trustDomain: TD, datacenter: 'dc1', node: 'n1' }), `spiffe://${TD}/agent/client/dc/dc1/id/n1`);
  });

  test("escaping follows Go's encodePath (plus '/')", () => {
    assert.equal(escapeSegment('a-b_c.d~e'), 'a-b_c.d~e');
    assert.equal(escapeSegment("a b/c!*'()"), 'a%20b%2Fc%21%2A%27%28%29');
    assert.equal(escapeSegment('$&+,:;=@'), '$&+,:;=@');
    assert.equal(escapeSegment('é'), '%C3%A9');
  });

  const segment = fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' });
  const trustDomain = fc.stringMatching(/^[a-z0-9._-]{1,20}$/);
  const spiffeId: fc.Arbitrary<SpiffeId> = fc.oneof(
    fc.record(
      {
        kind: fc.constant('service' as const),
        trustDomain,
        partition: fc.oneof(fc.constant('default'), segment),
        namespace: segment,
        datacenter: segment,
        service: segment,
      },
      { noNullPrototype: true },
    ),
    fc.record({ kind: fc.constant('agent' as const), trustDomain, datacenter: segment, node: segment }, { noNullPrototype: true }),
  );

  test('property: parse(format(id)) == id', () => {
    fc.assert(
      fc.property(spiffeId, (id) => {
        assert.deepEqual(parseSpiffeId(formatSpiffeId(id)), id);
      }),
      { numRuns: 500 },
    );
  });
});

describe('subjectAltName tokenizer', () => {
  test('plain and quoted entries', () => {
    assert.deepEqual(splitSubjectAltName('URI:spiffe://a/ns/d/dc/x/svc/y, DNS:x.y, IP Address:127.0.0.1'), ['URI:spiffe://a/ns/d/dc/x/svc/y', 'DNS:x.y', 'IP Address:127.0.0.1']);
    assert.deepEqual(splitSubjectAltName('URI:"spiffe://a\\u002c URI:spiffe://evil", DNS:x'), ['URI:spiffe://a, URI:spiffe://evil', 'DNS:x']);
    assert.deepEqual(splitSubjectAltName(''), []);
    assert.throws(
      () => splitSubjectAltName('URI:"unterminated'),
      (e: unknown) => isHaproxyConnectError(e, 'SPIFFE_ID_INVALID'),
    );
  });

  test('property: values quoted the way Node quotes them never split', () => {
    // Node writes a value as a JSON string when it holds ',', '"', '\\' or control characters.
    const value = fc.string({ maxLength: 30 });
    const entry = fc.tuple(fc.constantFrom('URI', 'DNS', 'email'), value).map(([k, val]) => {
      const needsQuote = /[,"\\\u0000-\u001f]/.test(val);
      return { raw: `${k}:${val}`, printed: `${k}:${needsQuote ? JSON.stringify(val).replace(/,/g, '\\u002c') : val}` };
    });
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 5 }), (entries) => {
        fc.pre(entries.every((e) => !e.printed.includes(', ') || /"/.test(e.printed)));
        const text = entries.map((e) => e.printed).join(', ');
        assert.deepEqual(
          splitSubjectAltName(text),
          entries.map((e) => e.raw),
        );
      }),
      { numRuns: 1000 },
    );
  });
});

describe('certificates (openssl)', () => {
  let dir = '';
  let keyFile = '';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'spiffe-test-'));
    keyFile = join(dir, 'key.pem');
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile], { stdio: 'pipe' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  let serial = 0;
  /** A self-signed certificate whose SAN section holds `lines` (written to an openssl config file). */
  function certWithSans(lines: string[]): X509Certificate {
    serial += 1;
    const cfg = join(dir, `cfg-${serial}.cnf`);
    const out = join(dir, `cert-${serial}.pem`);
    // openssl's config parser treats quotes and backslashes specially: escape them.
    const escaped = lines.map((l) => l.replace(/["'\\]/g, (c) => `\\${c}`));
    const sanSection = lines.length > 0 ? `subjectAltName = @alt\n[alt]\n${escaped.join('\n')}\n` : '';
    writeFileSync(cfg, `[req]\ndistinguished_name = dn\n[dn]\n[ext]\nbasicConstraints = CA:FALSE\n${sanSection}`);
    execFileSync('openssl', ['req', '-x509', '-key', keyFile, '-out', out, '-subj', '/', '-days', '1', '-config', cfg, '-extensions', 'ext'], { stdio: 'pipe' });
    return new X509Certificate(readFileSync(out));
  }

  test('one URI SAN: the SPIFFE ID, from an X509Certificate or a PEM string', () => {
    const uri = `spiffe://${TD}/ns/default/dc/dc1/svc/web`;
    const cert = certWithSans([`URI.1 = ${uri}`, 'DNS.1 = web.example']);
    assert.deepEqual(uriSansOf(cert), [uri]);
    assert.deepEqual(spiffeIdOfCertificate(cert), parseSpiffeId(uri));
    assert.deepEqual(spiffeIdOfCertificate(cert.toString()), parseSpiffeId(uri));
  });

  test('zero or two URI SANs are rejected', () => {
    for (const lines of [[], ['DNS.1 = x'], ['URI.1 = spiffe://a/ns/d/dc/d/svc/a', 'URI.2 = spiffe://a/ns/d/dc/d/svc/b']]) {
      assert.throws(
        () => spiffeIdOfCertificate(certWithSans(lines)),
        (e: unknown) => isHaproxyConnectError(e, 'SPIFFE_ID_INVALID') && /URI SANs/.test(e.message),
      );
    }
  });

  test('garbage PEM is CERTIFICATE_INVALID', () => {
    assert.throws(
      () => spiffeIdOfCertificate('not a cert'),
      (e: unknown) => isHaproxyConnectError(e, 'CERTIFICATE_INVALID'),
    );
  });

  test('a crafted URI containing ", URI:spiffe://evil/..." stays one (invalid) URI', () => {
    const crafted = `spiffe://${TD}/ns/default/dc/dc1/svc/web, URI:spiffe://evil/ns/default/dc/dc1/svc/admin`;
    const cert = certWithSans([`URI.1 = ${crafted}`]);
    assert.deepEqual(uriSansOf(cert), [crafted]);
    assert.throws(
      () => spiffeIdOfCertificate(cert),
      (e: unknown) => isHaproxyConnectError(e, 'SPIFFE_ID_INVALID'),
    );
  });

  test('property: a crafted single URI SAN is never split into two', () => {
    // Printable ASCII without characters that openssl's config parser treats specially.
    const chunk = fc.stringMatching(/^[A-Za-z0-9 ,:/."'\\@=_-]{0,12}$/);
    fc.assert(
      fc.property(chunk, chunk, (before, tail) => {
        const uri = `spiffe://td/${before}, URI:spiffe://evil/ns/default/dc/dc1/svc/${tail}`.trim();
        const cert = certWithSans([`URI.1 = ${uri}`]);
        const uris = uriSansOf(cert);
        assert.equal(uris.length, 1);
        assert.equal(uris[0], uri);
      }),
      { numRuns: 15 },
    );
  });
});
