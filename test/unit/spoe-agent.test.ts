/** The SPOE agent against a codec-driven fake HAProxy on a unix socket in a temp dir. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { SpoeAgent, type SpoeAgentOptions } from '../../src/spoe/agent.js';
import { FrameSplitter, decodeFrame, encodeFrame } from '../../src/spoe/codec.js';
import { FLAG_FIN, SPOP_STATUS, kvGet, type Frame, type KvPair, type SpoeMessage } from '../../src/spoe/types.js';

const WAIT_MS = 5_000;

let dir: string;
let counter = 0;
const agents: SpoeAgent[] = [];
const clients: FakeHaproxy[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'spoe-agent-'));
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(agents.splice(0).map((a) => a.close()));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const allowAll = (): ReturnType<SpoeAgentOptions['handle']> => [{ type: 'set-var', scope: 'sess', name: 'auth', value: { type: 'int32', value: 1 } }];

async function startAgent(options: Partial<SpoeAgentOptions> = {}): Promise<SpoeAgent> {
  const agent = await SpoeAgent.listen({ socketPath: join(dir, `a${counter++}.sock`), handle: allowAll, ...options });
  agents.push(agent);
  return agent;
}

/** A fake HAProxy: writes frames, collects decoded frames, notices the close. */
class FakeHaproxy {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  closed = false;
  readonly #splitter = new FrameSplitter(1 << 20);
  #waiters: Array<() => void> = [];

  constructor(path: string) {
    this.socket = connect(path);
    this.socket.on('data', (chunk: Buffer) => {
      for (const body of this.#splitter.push(chunk)) this.frames.push(decodeFrame(body));
      this.#wake();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    clients.push(this);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Waits (with a deadline) until `check` holds. */
  async until(what: string, check: () => boolean): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; frames: ${this.frames.map((f) => f.type).join(',')}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async frame(index: number): Promise<Frame> {
    await this.until(`frame ${index}`, () => this.frames.length > index);
    return this.frames[index] as Frame;
  }

  send(frame: Frame): void {
    this.socket.write(encodeFrame(frame));
  }

  hello(items: KvPair[] = helloItems()): void {
    this.send({ type: 'haproxy-hello', flags: FLAG_FIN, streamId: 0n, frameId: 0n, items });
  }

  notify(streamId: bigint, frameId: bigint, messages: SpoeMessage[], flags = FLAG_FIN): void {
    this.send({ type: 'notify', flags, streamId, frameId, messages });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function helloItems(overrides: Record<string, KvPair['value'] | undefined> = {}): KvPair[] {
  const items: Record<string, KvPair['value'] | undefined> = {
    'supported-versions': { type: 'string', value: '2.0' },
    'max-frame-size': { type: 'uint32', value: 16_380 },
    capabilities: { type: 'string', value: 'pipelining,async' },
    'engine-id': { type: 'string', value: 'engine-1' },
    ...overrides,
  };
  return Object.entries(items).flatMap(([name, value]) => (value === undefined ? [] : [{ name, value }]));
}

async function expectDisconnect(client: FakeHaproxy, status: number, message: RegExp): Promise<void> {
  await client.until('AGENT-DISCONNECT', () => client.frames.some((f) => f.type === 'agent-disconnect'));
  const frame = client.frames.find((f) => f.type === 'agent-disconnect');
  assert.ok(frame?.type === 'agent-disconnect');
  assert.deepEqual(kvGet(frame.items, 'status-code'), { type: 'uint32', value: status });
  const text = kvGet(frame.items, 'message');
  assert.ok(text?.type === 'string' && message.test(text.value), `message: ${JSON.stringify(text)}`);
  await client.until('close', () => client.closed);
}

const certMessage = (der: Buffer): SpoeMessage => ({ name: 'check-client', args: [{ name: 'cert', value: { type: 'binary', value: der } }] });

describe('HELLO handshake', () => {
  test('answers version 2.0, the smaller max-frame-size and only the capabilities both support', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    const reply = await client.frame(0);
    assert.equal(reply.type, 'agent-hello');
    assert.ok(reply.type === 'agent-hello');
    assert.equal(reply.streamId, 0n);
    assert.equal(reply.flags & FLAG_FIN, FLAG_FIN);
    assert.deepEqual(kvGet(reply.items, 'version'), { type: 'string', value: '2.0' });
    assert.deepEqual(kvGet(reply.items, 'max-frame-size'), { type: 'uint32', value: 16_380 });
    assert.deepEqual(kvGet(reply.items, 'capabilities'), { type: 'string', value: 'pipelining' });
    assert.equal(client.closed, false);
  });

  test('the agent max-frame-size wins when smaller; no pipelining unless offered', async () => {
    const agent = await startAgent({ maxFrameSize: 1024 });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello(helloItems({ capabilities: { type: 'string', value: '' }, 'supported-versions': { type: 'string', value: ' 2.0 , 1.5' } }));
    const reply = await client.frame(0);
    assert.ok(reply.type === 'agent-hello');
    assert.deepEqual(kvGet(reply.items, 'max-frame-size'), { type: 'uint32', value: 1024 });
    assert.deepEqual(kvGet(reply.items, 'capabilities'), { type: 'string', value: '' });
  });

  test('a healthcheck HELLO gets AGENT-HELLO and the connection closes', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello(helloItems({ healthcheck: { type: 'bool', value: true } }));
    assert.equal((await client.frame(0)).type, 'agent-hello');
    await client.until('close', () => client.closed);
  });

  const refusals: Array<[string, KvPair[], number, RegExp]> = [
    ['no supported-versions', helloItems({ 'supported-versions': undefined }), SPOP_STATUS.NO_VERSION, /supported-versions/],
    ['only SPOP 1.x', helloItems({ 'supported-versions': { type: 'string', value: '1.0' } }), SPOP_STATUS.BAD_VERSION, /'1.0'/],
    ['no max-frame-size', helloItems({ 'max-frame-size': undefined }), SPOP_STATUS.NO_FRAME_SIZE, /max-frame-size/],
    ['a max-frame-size below 256', helloItems({ 'max-frame-size': { type: 'uint32', value: 100 } }), SPOP_STATUS.BAD_FRAME_SIZE, /100/],
    ['no capabilities', helloItems({ capabilities: undefined }), SPOP_STATUS.NO_CAPABILITIES, /capabilities/],
  ];
  for (const [what, items, status, message] of refusals) {
    test(`refuses a HELLO with ${what} (status ${status})`, async () => {
      const agent = await startAgent();
      const client = new FakeHaproxy(agent.socketPath);
      client.hello(items);
      await expectDisconnect(client, status, message);
      assert.equal(agent.stats.protocolErrors, 1);
    });
  }

  test('a NOTIFY before the HELLO is invalid (status 4)', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.notify(1n, 1n, []);
    await expectDisconnect(client, SPOP_STATUS.INVALID, /expected HAPROXY-HELLO, got a notify/);
  });

  test('no HELLO within the frame timeout: status 2', async () => {
    const agent = await startAgent({ frameTimeoutMs: 100 });
    const client = new FakeHaproxy(agent.socketPath);
    await expectDisconnect(client, SPOP_STATUS.TIMEOUT, /HAPROXY-HELLO within 100 ms/);
  });
});

describe('NOTIFY and ACK', () => {
  test('calls handle with the messages and acknowledges with its actions and the same 64-bit ids', async () => {
    const seen: SpoeMessage[][] = [];
    const agent = await startAgent({
      handle: (messages) => {
        seen.push([...messages]);
        return allowAll();
      },
    });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    const der = Buffer.from('3082010a', 'hex');
    const big = 2n ** 40n + 7n;
    client.notify(big, big + 1n, [certMessage(der)]);
    const ack = await client.frame(1);
    assert.deepEqual(ack, {
      type: 'ack',
      flags: FLAG_FIN,
      streamId: big,
      frameId: big + 1n,
      actions: allowAll(),
    });
    assert.deepEqual(seen, [[certMessage(der)]]);
    assert.equal(agent.stats.notifies, 1);
  });

  test('pipelined NOTIFYs in one write get their ACKs in order', async () => {
    const agent = await startAgent({
      handle: (messages) => {
        const first = messages[0]?.args[0]?.value;
        const n = first?.type === 'int32' ? first.value : -1;
        return [{ type: 'set-var', scope: 'txn', name: 'n', value: { type: 'int32', value: n } }];
      },
    });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    const count = 200;
    client.socket.write(
      Buffer.concat(
        Array.from({ length: count }, (_, i) =>
          encodeFrame({ type: 'notify', flags: FLAG_FIN, streamId: BigInt(i), frameId: 1n, messages: [{ name: 'm', args: [{ name: '', value: { type: 'int32', value: i } }] }] }),
        ),
      ),
    );
    await client.until(`${count} ACKs`, () => client.frames.length === count + 1);
    client.frames.slice(1).forEach((f, i) => {
      assert.ok(f.type === 'ack');
      assert.equal(f.streamId, BigInt(i));
      assert.deepEqual(f.actions[0], { type: 'set-var', scope: 'txn', name: 'n', value: { type: 'int32', value: i } });
    });
  });

  test('a throwing handler yields an ACK without actions (deny) and the connection stays', async () => {
    const agent = await startAgent({
      handle: () => {
        throw new Error('boom');
      },
    });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    client.notify(5n, 6n, [certMessage(Buffer.alloc(3))]);
    assert.deepEqual(await client.frame(1), { type: 'ack', flags: FLAG_FIN, streamId: 5n, frameId: 6n, actions: [] });
    assert.equal(agent.stats.handlerErrors, 1);
    assert.equal(client.closed, false);
  });

  test('a fragmented NOTIFY is refused (status 10)', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    client.notify(1n, 1n, [], 0);
    await expectDisconnect(client, SPOP_STATUS.FRAGMENTATION_NOT_SUPPORTED, /fragmented/);
  });

  test('unknown frame types are skipped', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    client.send({ type: 'unknown', frameType: 42, flags: FLAG_FIN, streamId: 0n, frameId: 0n, payload: Buffer.from('xyz') });
    client.notify(1n, 2n, []);
    assert.equal((await client.frame(1)).type, 'ack');
  });
});

describe('errors, timeouts and shutdown', () => {
  test('a socket it cannot listen on is SPOE_LISTEN_FAILED naming the path', async () => {
    const socketPath = join(dir, 'no-such-dir', 'a.sock');
    await assert.rejects(SpoeAgent.listen({ socketPath, handle: allowAll }), (err: unknown) => {
      assert.ok(err instanceof Error && 'code' in err && err.code === 'SPOE_LISTEN_FAILED', String(err));
      assert.ok(err.message.includes(socketPath));
      return true;
    });
  });

  test('HAPROXY-DISCONNECT gets AGENT-DISCONNECT status 0 and a close', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    client.send({
      type: 'haproxy-disconnect',
      flags: FLAG_FIN,
      streamId: 0n,
      frameId: 0n,
      items: [
        { name: 'status-code', value: { type: 'uint32', value: 0 } },
        { name: 'message', value: { type: 'string', value: 'bye' } },
      ],
    });
    await expectDisconnect(client, SPOP_STATUS.NORMAL, /ok/);
    assert.equal(agent.stats.protocolErrors, 0);
  });

  test('a malformed frame gets AGENT-DISCONNECT status 4 naming the problem', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    // NOTIFY whose argument has data type 12.
    client.socket.write(Buffer.from([0, 0, 0, 12, 3, 0, 0, 0, 1, 1, 1, 1, 0x6d, 1, 0, 0x0c]));
    await expectDisconnect(client, SPOP_STATUS.INVALID, /unknown data type 12/);
  });

  test('a frame above the negotiated max-frame-size: status 3', async () => {
    const agent = await startAgent();
    const client = new FakeHaproxy(agent.socketPath);
    client.hello(helloItems({ 'max-frame-size': { type: 'uint32', value: 300 } }));
    await client.frame(0);
    client.notify(1n, 1n, [certMessage(Buffer.alloc(400))]);
    await expectDisconnect(client, SPOP_STATUS.TOO_BIG, /exceeds the max-frame-size 300/);
  });

  test('half a frame that never completes: status 2 after the frame timeout', async () => {
    const agent = await startAgent({ frameTimeoutMs: 150 });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    client.socket.write(encodeFrame({ type: 'notify', flags: FLAG_FIN, streamId: 1n, frameId: 1n, messages: [] }).subarray(0, 6));
    await expectDisconnect(client, SPOP_STATUS.TIMEOUT, /complete frame within 150 ms/);
  });

  test('an idle connection is closed with status 2', async () => {
    const agent = await startAgent({ idleTimeoutMs: 150 });
    const client = new FakeHaproxy(agent.socketPath);
    client.hello();
    await client.frame(0);
    await expectDisconnect(client, SPOP_STATUS.TIMEOUT, /idle for 150 ms/);
  });

  test('the socket is mode 0600, serves many connections, and close() disconnects them and removes it', async () => {
    const agent = await startAgent();
    assert.equal(statSync(agent.socketPath).mode & 0o777, 0o600);
    const many = Array.from({ length: 50 }, () => new FakeHaproxy(agent.socketPath));
    for (const c of many) c.hello();
    await Promise.all(many.map((c) => c.frame(0)));
    many.forEach((c, i) => {
      c.notify(BigInt(i), 1n, [certMessage(Buffer.from([i]))]);
    });
    await Promise.all(many.map(async (c) => assert.equal((await c.frame(1)).type, 'ack')));
    assert.equal(agent.stats.connections, 50);
    await agent.close();
    await Promise.all(many.map((c) => expectDisconnect(c, SPOP_STATUS.NORMAL, /shutting down/)));
    assert.equal(existsSync(agent.socketPath), false);
  });
});
