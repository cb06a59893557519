/**
 * The intentions authorizer (the SPOE handler) with certificates made by openssl: the verdict, the
 * identity variables, the echoed epoch, hostile certificates (all denied), revocation of remembered
 * connections, and the cost of a cached decision. Also the `show sess` parser.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { parseShowSess } from '../../src/driver/sessions.js';
import { Authorizer, formatSource, sourceKey, sourceOfKey } from '../../src/intentions/authorizer.js';
import type { Intention, IntentionSet } from '../../src/domain/intentions.js';
import type { SpoeAction, SpoeMessage, TypedData } from '../../src/spoe/types.js';
import { TRUST_DOMAIN } from '../helpers/fixtures.js';

const EPOCH = '123456789';

function intention(sourceName: string, action: 'allow' | 'deny', precedence = 9): Intention {
  return {
    sourceName,
    sourceNamespace: 'default',
    sourcePartition: 'default',
    sourcePeer: '',
    destinationName: 'api',
    destinationNamespace: 'default',
    destinationPartition: 'default',
    action,
    permissions: [],
    precedence,
  };
}

function set(intentions: Intention[], defaultAllow = false): IntentionSet {
  return { intentions, defaultAllow };
}

let dir = '';
let caKey = '';
let caPem = '';
let serial = 0;

/** A leaf signed by a test CA whose SAN section holds `lines`. */
function leaf(lines: string[]): Buffer {
  serial += 1;
  const key = join(dir, `k${serial}.pem`);
  const csr = join(dir, `c${serial}.csr`);
  const ext = join(dir, `e${serial}.cnf`);
  const out = join(dir, `l${serial}.pem`);
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], { stdio: 'pipe' });
  execFileSync('openssl', ['req', '-new', '-key', key, '-subj', '/', '-out', csr], { stdio: 'pipe' });
  const escaped = lines.map((l) => l.replace(/["'\\]/g, (c) => `\\${c}`));
  writeFileSync(ext, lines.length > 0 ? `subjectAltName = @alt\n[alt]\n${escaped.join('\n')}\n` : 'basicConstraints = CA:FALSE\n');
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', caPem, '-CAkey', caKey, '-CAcreateserial', '-days', '1', '-extfile', ext, '-out', out], { stdio: 'pipe' });
  return new X509Certificate(readFileSync(out)).raw;
}

function svc(name: string, td = TRUST_DOMAIN): string {
  return `spiffe://${td}/ns/default/dc/dc1/svc/${name}`;
}

function notify(cert: Buffer | undefined, port = 40000): SpoeMessage[] {
  const args: SpoeMessage['args'] = [];
  if (cert !== undefined) args.push({ name: 'cert', value: { type: 'binary', value: cert } });
  args.push(
    { name: 'src', value: { type: 'ipv4', value: Buffer.from([127, 0, 0, 1]) } },
    { name: 'src_port', value: { type: 'int64', value: BigInt(port) } },
    { name: 'epoch', value: { type: 'string', value: EPOCH } },
  );
  return [{ name: 'authorize', args }];
}

function vars(actions: SpoeAction[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of actions) if (a.type === 'set-var') out[a.name] = 'value' in a.value ? a.value.value : null;
  return out;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'authorizer-test-'));
  caKey = join(dir, 'ca.key');
  caPem = join(dir, 'ca.pem');
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey], { stdio: 'pipe' });
  execFileSync('openssl', ['req', '-x509', '-new', '-key', caKey, '-subj', '/CN=Test CA', '-days', '2', '-out', caPem], { stdio: 'pipe' });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('Authorizer', () => {
  test('allowed: auth 1, the identity and the echoed epoch', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set([intention('web', 'allow')]), trustDomain: TRUST_DOMAIN });
    const v = vars(authorizer.handle(notify(leaf([`URI.1 = ${svc('web')}`]))));
    assert.deepEqual(v, { epoch: EPOCH, auth: 1, source_service: 'web', source_namespace: 'default', source_partition: 'default', source_dc: 'dc1' });
    assert.deepEqual(authorizer.stats, { allowed: 1, denied: 0, l7: 0, requestsAllowed: 0, requestsDenied: 0, invalid: 0, trackedConnections: 1 });
  });

  test('reauthorize (asked again when the epoch moved on during the answer) is answered as authorize', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set([intention('web', 'allow'), intention('batch', 'deny')]), trustDomain: TRUST_DOMAIN });
    for (const service of ['web', 'batch']) {
      const [message] = notify(leaf([`URI.1 = ${svc(service)}`]));
      const first = authorizer.handle([message as SpoeMessage]);
      const again = authorizer.handle([{ ...(message as SpoeMessage), name: 'reauthorize' }]);
      assert.deepEqual(again, first, service);
      assert.deepEqual(
        first.filter((a) => a.type === 'set-var' && a.name === 'epoch').map((a) => a.type === 'set-var' && `${a.scope}.${a.name}`),
        ['sess.epoch'],
        'the epoch echoed, once, for the session',
      );
    }
  });

  test('denied by intention or default policy: auth 0, identity still reported', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set([intention('web', 'deny')]), trustDomain: TRUST_DOMAIN });
    assert.equal(vars(authorizer.handle(notify(leaf([`URI.1 = ${svc('web')}`])))).auth, 0);
    assert.equal(vars(authorizer.handle(notify(leaf([`URI.1 = ${svc('batch')}`])))).auth, 0, 'default deny');
    assert.equal(authorizer.stats.trackedConnections, 0);
  });

  test('hostile and unusable certificates are all denied', () => {
    const authorizer = new Authorizer();
    // Allow everything: only the certificate can make these fail.
    authorizer.update({ intentions: set([], true), trustDomain: TRUST_DOMAIN });
    const cases: Array<[string, Buffer | undefined]> = [
      ['two URI SANs', leaf([`URI.1 = ${svc('web')}`, `URI.2 = ${svc('admin')}`])],
      ['no URI SAN', leaf(['DNS.1 = web.example'])],
      ['no SAN at all', leaf([])],
      ['a URI SAN containing ", URI:"', leaf([`URI.1 = ${svc('web')}, URI:${svc('admin')}`])],
      ['another trust domain', leaf([`URI.1 = ${svc('web', '99999999-8888-7777-6666-555555555555.consul')}`])],
      ['an agent ID', leaf([`URI.1 = spiffe://${TRUST_DOMAIN}/agent/client/dc/dc1/id/node-1`])],
      ['not a SPIFFE URI', leaf(['URI.1 = https://web.example/'])],
      ['garbage bytes', Buffer.from('not a certificate')],
      ['no certificate', undefined],
    ];
    for (const [what, cert] of cases) {
      const v = vars(authorizer.handle(notify(cert)));
      assert.equal(v.auth, 0, what);
      assert.equal(v.source_service, undefined, `${what}: no identity`);
    }
    assert.equal(authorizer.stats.invalid, cases.length);
    assert.equal(authorizer.stats.allowed, 0);
  });

  test('before the trust domain is known every connection is denied', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set([], true) });
    assert.equal(vars(authorizer.handle(notify(leaf([`URI.1 = ${svc('web')}`])))).auth, 0);
  });

  test('a change that denies a source revokes its remembered connections, and only those', () => {
    const authorizer = new Authorizer({ maxTrackedConnections: 3 });
    authorizer.update({ intentions: set([intention('web', 'allow'), intention('batch', 'allow')]), trustDomain: TRUST_DOMAIN });
    const web = leaf([`URI.1 = ${svc('web')}`]);
    const batch = leaf([`URI.1 = ${svc('batch')}`]);
    authorizer.handle(notify(web, 1));
    authorizer.handle(notify(web, 2));
    authorizer.handle(notify(batch, 3));
    authorizer.handle(notify(web, 4)); // bounded: port 1 is forgotten
    assert.equal(authorizer.stats.trackedConnections, 3);
    assert.deepEqual(authorizer.update({ intentions: set([intention('web', 'allow'), intention('batch', 'allow')]) }), [], 'no change');
    const revoked = authorizer.update({ intentions: set([intention('web', 'deny'), intention('batch', 'allow')]) });
    assert.deepEqual(revoked.map((r) => r.source).sort(), ['127.0.0.1:2', '127.0.0.1:4']);
    assert.equal(authorizer.stats.trackedConnections, 1);
    assert.equal(vars(authorizer.handle(notify(web, 5))).auth, 0, 'new connections are denied too');
  });

  test('a cached decision costs microseconds', () => {
    const authorizer = new Authorizer();
    authorizer.update({ intentions: set([intention('web', 'allow')]), trustDomain: TRUST_DOMAIN });
    const message = notify(leaf([`URI.1 = ${svc('web')}`]));
    const runs = 20_000;
    for (let i = 0; i < 1_000; i++) authorizer.handle(message);
    const started = performance.now();
    for (let i = 0; i < runs; i++) authorizer.handle(message);
    const perCallUs = ((performance.now() - started) * 1_000) / runs;
    console.log(`authorizer.handle with a cached certificate and decision: ${perCallUs.toFixed(2)} µs per connection`);
    assert.ok(perCallUs < 200, `${perCallUs} µs`);
  });

  test('formatSource prints sources as show sess does', () => {
    const v4: TypedData = { type: 'ipv4', value: Buffer.from([10, 0, 0, 7]) };
    const v6: TypedData = { type: 'ipv6', value: Buffer.from('20010db8000000000000000000000001', 'hex') };
    assert.equal(formatSource(v4, { type: 'int64', value: 443n }), '10.0.0.7:443');
    assert.equal(formatSource(v6, { type: 'uint32', value: 80 }), '2001:db8::1:80');
    assert.equal(formatSource(undefined, { type: 'uint32', value: 80 }), undefined);
    assert.equal(formatSource(v4, { type: 'int64', value: 70_000n }), undefined);
  });

  test('property: a tracked source key prints as formatSource does, IPv4 (a number) and IPv6 (the string) alike', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 })),
        fc.integer({ min: -1, max: 70_000 }),
        fc.constantFrom('int32', 'int64'),
        (bytes, port, portType) => {
          const address: TypedData = bytes.length === 4 ? { type: 'ipv4', value: Buffer.from(bytes) } : { type: 'ipv6', value: Buffer.from(bytes) };
          const portData: TypedData = portType === 'int32' ? { type: 'int32', value: port } : { type: 'int64', value: BigInt(port) };
          const key = sourceKey(address, portData);
          const printed = formatSource(address, portData);
          assert.equal(key === undefined ? undefined : sourceOfKey(key), printed);
          if (bytes.length === 4 && printed !== undefined) assert.equal(typeof key, 'number');
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('parseShowSess', () => {
  test('reads client streams and skips internal ones (format measured on 2.6.12)', () => {
    const text = [
      '0x55c7becc5f90: proto=? ts=00 epoch=0 age=1s calls=1 rate=1 cpu=0 lat=0 rq[f=848202h,i=0,an=00h,rx=,wx=,ax=] rp[f=80048202h,i=0,an=00h,rx=59s,wx=,ax=] scf=[8,40h,fd=-1] scb=[8,1h,fd=12] exp=59s rc=0 c_exp=',
      '0x55c7becff9c0: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0 age=0s calls=1 rate=1 cpu=0 lat=0',
      '0x55c7bed00a10: proto=tcpv4 src=127.0.0.1:51250 fe=public_listener be=local_app srv=app ts=00 epoch=0 age=3s calls=4',
    ].join('\n');
    assert.deepEqual(parseShowSess(text), [
      { id: '0x55c7becff9c0', source: 'unix:1', frontend: 'GLOBAL' },
      { id: '0x55c7bed00a10', source: '127.0.0.1:51250', frontend: 'public_listener' },
    ]);
  });
});
