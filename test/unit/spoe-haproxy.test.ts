/**
 * The SPOE agent with the real HAProxy 2.6 (nbthread 2): a plain-TCP frontend asks the agent on
 * `on-frontend-tcp-request` and rejects unless the agent set sess.connect.auth to 1. Allow passes
 * traffic, deny rejects, and an agent that is down rejects too (fail closed).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { freePorts, waitFor } from '../../devtools/ports.js';
import { SpoeAgent } from '../../src/spoe/agent.js';
import type { SpoeMessage } from '../../src/spoe/types.js';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

const CLIENT_TIMEOUT_MS = 5_000;
const ROUNDS = 20;

let dir: string;
let socketPath: string;
let echo: Server;
let haproxy: ChildProcess | undefined;
let haproxyOutput = '';
let frontendPort: number;
let agent: SpoeAgent | undefined;
let verdict: 'allow' | 'deny' = 'allow';
const received: SpoeMessage[][] = [];

function handle(messages: readonly SpoeMessage[]): ReturnType<Parameters<typeof SpoeAgent.listen>[0]['handle']> {
  received.push([...messages]);
  return [{ type: 'set-var', scope: 'sess', name: 'auth', value: { type: 'int32', value: verdict === 'allow' ? 1 : 0 } }];
}

/** Connects through HAProxy, sends a line, returns what came back before the close (or timeout). */
function roundTrip(payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(frontendPort, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${CLIENT_TIMEOUT_MS} ms (got ${JSON.stringify(data)})`));
    }, CLIENT_TIMEOUT_MS);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (d: Buffer) => {
      data += d.toString();
      if (data === payload) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spoe-haproxy-'));
  socketPath = join(dir, 'spoe.sock');
  const [fePort, appPort] = (await freePorts(2)) as [number, number];
  frontendPort = fePort;
  echo = createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(appPort, '127.0.0.1', () => r()));
  agent = await SpoeAgent.listen({ socketPath, handle });

  const spoeCfg = join(dir, 'spoe.cfg');
  writeFileSync(
    spoeCfg,
    `[connect]
spoe-agent connect-agent
  messages check-client
  option var-prefix connect
  timeout hello 2s
  timeout idle 30s
  timeout processing 2s
  use-backend spoe-agents

spoe-message check-client
  args cert=str(not-a-real-certificate)
  event on-frontend-tcp-request
`,
  );
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    `global
  nbthread 2

defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s

frontend public
  bind 127.0.0.1:${fePort}
  filter spoe engine connect config ${spoeCfg}
  tcp-request inspect-delay 3s
  tcp-request content reject if !{ var(sess.connect.auth) -m int eq 1 }
  default_backend app

backend app
  server app 127.0.0.1:${appPort}

backend spoe-agents
  mode tcp
  timeout connect 1s
  timeout server 60s
  server agent unix@${socketPath}
`,
  );
  haproxy = spawn(HAPROXY_BIN, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  haproxy.stdout?.on('data', (d: Buffer) => (haproxyOutput += d.toString()));
  haproxy.stderr?.on('data', (d: Buffer) => (haproxyOutput += d.toString()));
  await waitFor(`haproxy to pass traffic (output: ${haproxyOutput})`, async () => ((await roundTrip('ping\n')) === 'ping\n' ? true : undefined), 15_000, 100);
});

after(async () => {
  if (haproxy !== undefined && haproxy.exitCode === null) {
    const exited = new Promise((r) => haproxy?.once('exit', r));
    haproxy.kill('SIGTERM');
    await exited;
  }
  await agent?.close();
  await new Promise<void>((r) => echo.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

test('allow: traffic passes, and the agent sees the message and its argument', async () => {
  verdict = 'allow';
  received.length = 0;
  const results = await Promise.all(Array.from({ length: ROUNDS }, (_, i) => roundTrip(`hello ${i}\n`)));
  results.forEach((r, i) => {
    assert.equal(r, `hello ${i}\n`);
  });
  assert.ok(received.length >= ROUNDS);
  assert.deepEqual(received[0], [{ name: 'check-client', args: [{ name: 'cert', value: { type: 'string', value: 'not-a-real-certificate' } }] }]);
});

test('deny: the connection is rejected', async () => {
  verdict = 'deny';
  const results = await Promise.all(Array.from({ length: ROUNDS }, () => roundTrip('secret\n')));
  for (const r of results) assert.equal(r, '');
});

test('agent down: rejected (fail closed); agent back: traffic passes again', async () => {
  verdict = 'allow';
  await agent?.close();
  agent = undefined;
  const results = await Promise.all(Array.from({ length: 5 }, () => roundTrip('anyone?\n')));
  for (const r of results) assert.equal(r, '');

  agent = await SpoeAgent.listen({ socketPath, handle });
  await waitFor('traffic to pass again', async () => ((await roundTrip('back\n')) === 'back\n' ? true : undefined), 10_000, 100);
  assert.equal(agent.stats.protocolErrors, 0, haproxyOutput);
});
