/**
 * The intentions epoch moving on while the agent answers, on the real HAProxy (HAPROXY_BIN) with the
 * configuration the sidecar renders: the agent is asked under epoch E1, and before it answers the
 * epoch becomes E2 in HAProxy's map through the admin socket, with the runtime commands the daemon
 * sends (opCommands of `set-intentions-epoch`: add E2, make it current, delete E1). The answer comes
 * back stamped E1. Both epochs allow the source, so the connection (TCP) or request (HTTP) must be
 * served: HAProxy asks again (the `reauthorize` group) and the second answer, stamped E2, stands.
 * Before the rule that asks again, the stale answer was refused: a 403 or a closed connection for a
 * source that was allowed throughout (seen on the real pair: 3 of 648,464 new connections refused
 * through 120 intention changes).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { after, describe, test } from 'node:test';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { freePort } from '../../devtools/ports.js';
import { ADMIN_SOCKET_FILE, INTENTIONS_EPOCH_MAP_FILE, SPOE_AGENT_SOCKET_FILE, SPOE_MESSAGE, SPOE_REAUTHORIZE_MESSAGE } from '../../src/domain/haproxy-names.js';
import type { IntentionSet } from '../../src/domain/intentions.js';
import { render } from '../../src/haproxy/render.js';
import { opCommands } from '../../src/haproxy/runtime-ops.js';
import { Authorizer } from '../../src/intentions/authorizer.js';
import { SpoeAgent } from '../../src/spoe/agent.js';
import type { SpoeMessage } from '../../src/spoe/types.js';
import { translate } from '../../src/translate/translate.js';
import { PEM, snapshot, TRUST_DOMAIN } from '../helpers/fixtures.js';
import { intentionFrom } from '../helpers/intentions.js';

const READY_DEADLINE_MS = 10_000;
const ANSWER_TIMEOUT_MS = 8_000;
const E2 = '2222';
/** `api` (the client certificate's service) is allowed; everything else is denied. */
const INTENTIONS: IntentionSet = { intentions: [intentionFrom('api', { action: 'allow' })], defaultAllow: false };

const dir = mkdtempSync(join(tmpdir(), 'hc-epoch-race-'));
const children: ChildProcess[] = [];
const servers: Server[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const server of servers) server.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Sends `commands` to HAProxy's admin socket, one connection each, in order, and returns the
 * answers: synchronous, so they land before the SPOE handler returns.
 */
function adminSync(socketPath: string, commands: readonly string[]): string {
  const script = `const net=require('net');const [path,...cmds]=process.argv.slice(1);let out='';const next=()=>{const c=cmds.shift();if(c===undefined){process.stdout.write(out);return;}const s=net.connect(path);s.on('data',(d)=>{out+=d});s.on('close',next);s.write(c+'\\n');};next();`;
  return execFileSync(process.execPath, ['-e', script, socketPath, ...commands], { encoding: 'utf8', timeout: 5_000 });
}

/** One TLS connection with the `api` certificate: sends `payload`, resolves with what came back until the close. */
function exchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, ca: PEM.ca, checkServerIdentity: () => undefined, cert: PEM.apiCert, key: PEM.apiKey });
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${ANSWER_TIMEOUT_MS} ms (got ${JSON.stringify(received)})`));
    }, ANSWER_TIMEOUT_MS);
    socket.on('secureConnect', () => socket.write(payload));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('utf8');
      if (received.endsWith('pong\n')) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

/**
 * The web sidecar's public listener (protocol `protocol`, intentions enforced) in front of an app
 * that answers `pong`; the agent's first `authorize` moves the epoch before it answers.
 */
async function raceOnce(protocol: 'tcp' | 'http'): Promise<{ answer: string; asked: SpoeMessage[][] }> {
  const runDir = mkdtempSync(join(dir, `${protocol}-`));
  const app = createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => socket.end(protocol === 'http' ? 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\npong\n' : 'pong\n'));
  });
  servers.push(app);
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const port = await freePort();
  const { model } = translate(snapshot({ listener: { bindAddress: '127.0.0.1', bindPort: port, localServicePort: (app.address() as AddressInfo).port, protocol }, intentions: INTENTIONS }), {
    runDir,
  });
  for (const file of model.files) writeFileSync(join(runDir, file.name), file.content, { mode: file.mode });
  const cfg = join(runDir, 'haproxy.cfg');
  writeFileSync(cfg, render(model));
  const epochFile = model.files.find((file) => file.name === INTENTIONS_EPOCH_MAP_FILE);
  const e1 = /^current (\S+)$/m.exec(epochFile?.content ?? '')?.[1];
  assert.ok(e1 !== undefined && e1 !== E2, `the rendered epoch map: ${epochFile?.content}`);

  const authorizer = new Authorizer();
  authorizer.update({ intentions: INTENTIONS, trustDomain: TRUST_DOMAIN });
  const asked: SpoeMessage[][] = [];
  let armed = false;
  const mapPath = join(runDir, INTENTIONS_EPOCH_MAP_FILE);
  const agent = await SpoeAgent.listen({
    socketPath: join(runDir, SPOE_AGENT_SOCKET_FILE),
    handle: (messages) => {
      if (armed) {
        asked.push([...messages]);
        if (asked.length === 1) {
          const commands = opCommands({ kind: 'set-intentions-epoch', path: mapPath, epoch: E2, previous: [e1] }).map((command) => command.line);
          adminSync(join(runDir, ADMIN_SOCKET_FILE), commands);
        }
      }
      return authorizer.handle(messages);
    },
  });
  const haproxy = spawn(HAPROXY_BIN, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(haproxy);
  let output = '';
  haproxy.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  haproxy.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const payload = protocol === 'http' ? 'GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n' : 'ping\n';
  try {
    // Served before the race is armed: HAProxy listens and the agent allows `api`.
    const deadline = Date.now() + READY_DEADLINE_MS;
    while (!(await exchange(port, payload).catch(() => '')).endsWith('pong\n')) {
      if (Date.now() > deadline || haproxy.exitCode !== null) throw new Error(`haproxy did not serve on ${port}:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(adminSync(join(runDir, ADMIN_SOCKET_FILE), [`show map ${mapPath}`]).includes(`current ${e1}`), true);
    armed = true;
    const answer = await exchange(port, payload);
    const shown = adminSync(join(runDir, ADMIN_SOCKET_FILE), [`show map ${mapPath}`]);
    assert.match(shown, new RegExp(`current ${E2}`), `the epoch moved on: ${shown}`);
    return { answer, asked };
  } finally {
    haproxy.kill('SIGTERM');
    await agent.close();
  }
}

const names = (asked: SpoeMessage[][]) => asked.map((messages) => messages.map((m) => m.name).join('+'));
const epochArg = (messages: SpoeMessage[] | undefined) => messages?.[0]?.args.find((a) => a.name === 'epoch')?.value;

describe('the intentions epoch moves on while the agent answers (real HAProxy)', () => {
  for (const protocol of ['tcp', 'http'] as const) {
    test(`${protocol} listener: the stale answer is asked again, and the allowed source is served`, async () => {
      const { answer, asked } = await raceOnce(protocol);
      assert.deepEqual(names(asked), [SPOE_MESSAGE, SPOE_REAUTHORIZE_MESSAGE], 'asked under the old epoch, then again');
      assert.deepEqual(epochArg(asked[1]), { type: 'string', value: E2 }, 'the second question carries the new epoch');
      assert.ok(answer.endsWith('pong\n'), `served: ${JSON.stringify(answer)}`);
    });
  }
});
