/**
 * render helpers, validateModel failures, and one real-HAProxy check of the public listener's
 * crt-list: clients with and without SNI get the Consul leaf, and a client certificate is required.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatAddress, formatDuration, render } from '../../src/haproxy/render.js';
import { validateModel } from '../../src/haproxy/validate.js';
import { fnv1a32Hex, upstreamBackendName, upstreamFrontendName, endpointServerName } from '../../src/domain/haproxy-names.js';
import type { HaproxyModel } from '../../src/haproxy/model.js';
import { isHaproxyConnectError } from '../../src/errors.js';
import { translate } from '../../src/translate/translate.js';
import { PEM, endpoint, snapshot, upstream } from '../helpers/fixtures.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { freePort } from '../../devtools/ports.js';

const READY_DEADLINE_MS = 10_000;
const POLL_INTERVAL_MS = 50;

function baseModel(): HaproxyModel {
  const api = upstream('api');
  return translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1')]]] }), {
    runDir: '/run/haproxy-connect',
  }).model;
}

/** Applies `mutate` to a deep copy of the base model and expects MODEL_INVALID mentioning `mentions`. */
function assertInvalid(mutate: (model: HaproxyModel) => void, mentions: string): void {
  const model = structuredClone(baseModel());
  mutate(model);
  assert.throws(
    () => validateModel(model),
    (err: unknown) => {
      assert.ok(isHaproxyConnectError(err, 'MODEL_INVALID'), `expected MODEL_INVALID, got ${String(err)}`);
      assert.ok(err.message.includes(mentions), `message ${JSON.stringify(err.message)} should mention ${mentions}`);
      return true;
    },
  );
  assert.throws(
    () => render(model),
    (err: unknown) => isHaproxyConnectError(err, 'MODEL_INVALID'),
  );
}

describe('render helpers', () => {
  test('formatDuration uses the largest exact unit', () => {
    assert.equal(formatDuration(3_600_000), '1h');
    assert.equal(formatDuration(300_000), '5m');
    assert.equal(formatDuration(15_000), '15s');
    assert.equal(formatDuration(2_500), '2500ms');
    assert.equal(formatDuration(90_000), '90s');
  });

  test('formatAddress brackets IPv6 literals only', () => {
    assert.equal(formatAddress('127.0.0.1', 80), '127.0.0.1:80');
    assert.equal(formatAddress('::1', 80), '[::1]:80');
    assert.equal(formatAddress('node.example', 80), 'node.example:80');
  });

  test('render is deterministic and ends with one newline', () => {
    const text = render(baseModel());
    assert.equal(text, render(baseModel()));
    assert.ok(text.endsWith('\n') && !text.endsWith('\n\n'));
  });

  test('nbthread is rendered only when set', () => {
    const model = baseModel();
    assert.doesNotMatch(render(model), /nbthread/);
    assert.match(render({ ...model, global: { ...model.global, nbthread: 4 } }), /^ {4}nbthread 4$/m);
  });
});

describe('names', () => {
  test('FNV-1a matches the reference vectors', () => {
    assert.equal(fnv1a32Hex(''), '811c9dc5');
    assert.equal(fnv1a32Hex('a'), 'e40c292c');
    assert.equal(fnv1a32Hex('foobar'), 'bf9cf968');
  });

  test('names are valid, stable and distinct for keys that sanitize alike', () => {
    const a = upstreamFrontendName('service:default/a.b@dc1');
    const b = upstreamFrontendName('service:default/a_b@dc1');
    assert.notEqual(a, b);
    assert.equal(a, upstreamFrontendName('service:default/a.b@dc1'));
    assert.equal(upstreamBackendName('k'), `${upstreamFrontendName('k')}_be`);
    for (const name of [a, b, endpointServerName('node 1/ü@x'), endpointServerName('')]) {
      assert.match(name, /^[A-Za-z0-9_.:-]+$/);
    }
  });
});

describe('validateModel', () => {
  test('accepts what translate produces', () => {
    validateModel(baseModel());
  });

  test('a frontend in mode tcp that keeps idle connections through a reload', () => {
    assertInvalid((model) => {
      const frontend = model.frontends.find((f) => f.mode === 'tcp');
      assert.ok(frontend !== undefined, 'the base model has a tcp frontend');
      frontend.keepIdleThroughReload = true;
    }, 'keeps idle connections through a reload in mode tcp');
  });

  test('a default_backend that does not exist', () => {
    assertInvalid((model) => {
      model.frontends[0]!.defaultBackend = 'nowhere';
    }, 'nowhere');
  });

  test('duplicate frontend names', () => {
    assertInvalid((model) => {
      model.frontends[1]!.name = model.frontends[0]!.name;
    }, 'public_listener');
  });

  test('a frontend and a backend with the same name', () => {
    assertInvalid((model) => {
      model.frontends[1]!.name = 'local_app';
    }, 'local_app');
  });

  test('duplicate server names in a backend', () => {
    assertInvalid((model) => {
      const backend = model.backends[1]!;
      backend.servers.push({ ...backend.servers[0]!, address: '10.0.0.2' });
    }, 'two servers');
  });

  test('two frontends on the same address and port', () => {
    assertInvalid((model) => {
      model.frontends[1]!.bind = { kind: 'inet', address: '0.0.0.0', port: 21000 };
    }, '21000');
  });

  test('a wildcard bind overlapping a specific address on the same port', () => {
    assertInvalid((model) => {
      model.frontends[1]!.bind = { kind: 'inet', address: '127.0.0.1', port: 21000 };
    }, 'overlap on port 21000');
  });

  test('ports out of range', () => {
    assertInvalid((model) => {
      model.frontends[0]!.bind = { kind: 'inet', address: '0.0.0.0', port: 0 };
    }, 'got 0');
    assertInvalid((model) => {
      model.backends[1]!.servers[0]!.port = 65536;
    }, '65536');
  });

  test('a file referenced by TLS settings that the model lacks', () => {
    assertInvalid((model) => {
      model.backends[1]!.tls = { crt: 'other.pem', caFile: 'roots.pem', alpn: undefined };
    }, 'other.pem');
    assertInvalid((model) => {
      model.files = model.files.filter((file) => file.name !== 'roots.pem');
    }, 'roots.pem');
  });

  test('a file name with a slash', () => {
    assertInvalid((model) => {
      model.files[0]!.name = '../etc/passwd';
    }, '../etc/passwd');
  });

  test('addresses that could inject config text', () => {
    assertInvalid((model) => {
      model.backends[1]!.servers[0]!.address = '10.0.0.1 weight 0\n    server evil';
    }, 'server evil');
    assertInvalid((model) => {
      model.frontends[0]!.bind = { kind: 'inet', address: '[::1]', port: 21000 };
    }, '[::1]');
  });

  test('names outside [A-Za-z0-9_.:-]', () => {
    assertInvalid((model) => {
      model.backends[1]!.servers[0]!.name = 'bad name';
    }, 'bad name');
  });

  test('unix socket paths: relative, unsafe or too long', () => {
    assertInvalid((model) => {
      model.frontends[1]!.bind = { kind: 'unix', path: 'relative.sock', mode: undefined };
    }, 'relative.sock');
    assertInvalid((model) => {
      model.frontends[1]!.bind = { kind: 'unix', path: `/${'x'.repeat(120)}`, mode: undefined };
    }, 'limited to 107');
  });

  test('mode mismatch between an http frontend and a tcp backend', () => {
    assertInvalid((model) => {
      model.frontends[0]!.mode = 'http';
    }, 'mode tcp');
  });

  test('weights and timeouts out of range', () => {
    assertInvalid((model) => {
      model.backends[1]!.servers[0]!.weight = 257;
    }, '257');
    assertInvalid((model) => {
      model.backends[0]!.timeoutServerMs = 0;
    }, 'timeout server');
  });

  test('a crt-list line that references a missing file', () => {
    assertInvalid((model) => {
      const crtList = model.files.find((file) => file.name === 'public.crtlist')!;
      crtList.content = 'leaf.pem [ca-file missing-roots.pem verify required] *.consul\n';
    }, 'missing-roots.pem');
  });
});

interface HandshakeResult {
  ok: boolean;
  peerUri: string | undefined;
  echoed: string | undefined;
  error: string | undefined;
}

/** Connects with TLS (optionally with SNI and a client cert), sends a line, reads the echo. */
function tlsEcho(port: number, options: { servername?: string; clientCert?: boolean }): Promise<HandshakeResult> {
  return new Promise((resolve) => {
    const socket: TLSSocket = connect({
      host: '127.0.0.1',
      port,
      ca: PEM.ca,
      // Consul leaves carry no DNS name: check the chain only, as sidecars do.
      checkServerIdentity: () => undefined,
      ...(options.servername !== undefined ? { servername: options.servername } : {}),
      ...(options.clientCert === true ? { cert: PEM.apiCert, key: PEM.apiKey } : {}),
    });
    let peerUri: string | undefined;
    let received = '';
    const finish = (result: HandshakeResult): void => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(5_000, () => finish({ ok: false, peerUri, echoed: undefined, error: 'timeout' }));
    socket.on('secureConnect', () => {
      peerUri = socket.getPeerX509Certificate()?.subjectAltName;
      socket.write('ping\n');
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('utf8');
      if (received.includes('\n')) finish({ ok: true, peerUri, echoed: received, error: undefined });
    });
    socket.on('error', (err) => finish({ ok: false, peerUri, echoed: undefined, error: err.message }));
    socket.on('end', () => finish({ ok: false, peerUri, echoed: undefined, error: 'closed' }));
  });
}

describe('public listener against real HAProxy (crt-list with SNI filter)', () => {
  let runDir = '';
  let app: NetServer | undefined;
  let haproxy: ChildProcess | undefined;
  let haproxyOutput = '';
  let publicPort = 0;

  before(async () => {
    runDir = mkdtempSync(join(tmpdir(), 'hc-render-'));
    app = createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => app!.listen(0, '127.0.0.1', resolve));
    const appPort = (app.address() as AddressInfo).port;
    publicPort = await freePort();
    const model = translate(snapshot({ listener: { bindAddress: '127.0.0.1', bindPort: publicPort, localServicePort: appPort } }), { runDir }).model;
    for (const file of model.files) writeFileSync(join(runDir, file.name), file.content, { mode: file.mode });
    const cfgPath = join(runDir, 'haproxy.cfg');
    writeFileSync(cfgPath, render(model));
    haproxy = spawn(HAPROXY_BIN, ['-db', '-f', cfgPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout?.on('data', (chunk: Buffer) => (haproxyOutput += chunk.toString()));
    haproxy.stderr?.on('data', (chunk: Buffer) => (haproxyOutput += chunk.toString()));
    const deadline = Date.now() + READY_DEADLINE_MS;
    for (;;) {
      const probe = await tlsEcho(publicPort, { clientCert: true });
      if (probe.ok) break;
      if (Date.now() > deadline || haproxy.exitCode !== null) {
        throw new Error(`haproxy did not serve on ${publicPort}: ${probe.error ?? ''}\n${haproxyOutput}`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
  });

  after(async () => {
    if (haproxy !== undefined && haproxy.exitCode === null) {
      const exited = new Promise((resolve) => haproxy!.once('exit', resolve));
      haproxy.kill('SIGTERM');
      await exited;
    }
    if (app !== undefined) await new Promise((resolve) => app!.close(resolve));
    rmSync(runDir, { recursive: true, force: true });
  });

  const WEB_URI = 'URI:spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web';

  test('a client without SNI gets the leaf and is proxied', async () => {
    const result = await tlsEcho(publicPort, { clientCert: true });
    assert.deepEqual(result, { ok: true, peerUri: WEB_URI, echoed: 'ping\n', error: undefined });
  });

  test('a client with an unrelated SNI gets the same leaf', async () => {
    const result = await tlsEcho(publicPort, { clientCert: true, servername: 'api.example.org' });
    assert.equal(result.ok, true, result.error);
    assert.equal(result.peerUri, WEB_URI);
  });

  test('a client with SNI matching the filter gets the leaf', async () => {
    const result = await tlsEcho(publicPort, { clientCert: true, servername: 'web.default.dc1.internal.consul' });
    assert.equal(result.ok, true, result.error);
    assert.equal(result.peerUri, WEB_URI);
  });

  test('a client without a certificate is refused', async () => {
    const result = await tlsEcho(publicPort, {});
    assert.equal(result.ok, false);
    assert.equal(result.echoed, undefined);
  });
});
