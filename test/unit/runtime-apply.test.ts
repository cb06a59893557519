/**
 * The order applyOps keeps over one pipelined session (a fake session that records what was sent;
 * the real HAProxy runs in runtime.test.ts).
 */
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { applyOps } from '../../src/driver/runtime-apply.js';
import type { RuntimeSession } from '../../src/driver/runtime-session.js';
import type { RuntimeCommand, RuntimeOp } from '../../src/haproxy/runtime-ops.js';
import { isExpected } from '../../src/haproxy/runtime-ops.js';

/** Answers every command as HAProxy would on success, one event-loop turn later; records the order. */
function recordingSession(): { session: RuntimeSession; sent: string[] } {
  const sent: string[] = [];
  const answer = (line: string): string =>
    line.startsWith('add server') ? 'New server registered.' : line.startsWith('del server') ? 'Server deleted.' : line.startsWith('set server') ? 'no need to change the addr' : '';
  const send = async (line: string): Promise<string> => {
    sent.push(line);
    await tick();
    return answer(line);
  };
  const run = async (cmd: RuntimeCommand): Promise<string> => {
    const got = await send(cmd.line);
    assert.ok(isExpected(cmd, got), `${cmd.line} -> ${got}`);
    return got;
  };
  return { session: { send, run, close: () => undefined } as unknown as RuntimeSession, sent };
}

describe('applyOps ordering', () => {
  test('a removal starts only once the adds and moves before it are done: no moment without a usable server', async () => {
    const { session, sent } = recordingSession();
    const ops: RuntimeOp[] = [
      { kind: 'add-server', backend: 'be', server: { name: 'new', address: '10.0.0.2', port: 21000, weight: 1 }, spec: 'new 10.0.0.2:21000 weight 1' },
      { kind: 'set-address', backend: 'be', server: 'revived', address: '10.0.0.3', port: 21000 },
      { kind: 'remove-server', backend: 'be', server: 'old' },
    ];
    const results = await applyOps(session, ops);
    assert.deepEqual(
      results.map((r) => r.status),
      ['ok', 'ok', 'ok'],
      JSON.stringify(results.map((r) => r.error?.message)),
    );
    const firstRemoval = sent.indexOf('disable server be/old');
    assert.ok(firstRemoval > sent.indexOf('enable server be/new'), sent.join(' | '));
    assert.ok(firstRemoval > sent.indexOf('enable server be/revived'), sent.join(' | '));
  });
});
