/**
 * The restart policy against a fake supervisor (the real one: process.test.ts). Backoffs are a few
 * milliseconds so the tests run on real timers.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test } from 'node:test';
import type { ProcessState } from '../../src/domain/haproxy.js';
import { type Crash, RestartPolicy, type Restartable } from '../../src/reconcile/restart-policy.js';
import { captureLogs } from '../helpers/log-capture.js';

class FakeSupervisor extends EventEmitter implements Restartable {
  state: ProcessState = 'running';
  starts = 0;
  /** How the next start() calls end, in order; once used up, starts succeed. */
  outcomes: Array<'fail' | 'ok'> = [];
  startGate: Promise<void> | undefined;

  async start(): Promise<void> {
    this.starts += 1;
    this.state = 'starting';
    await this.startGate;
    if (this.outcomes.shift() === 'fail') {
      this.state = 'crashed';
      throw new Error('exited during startup');
    }
    this.state = 'running';
  }

  crash(ranForMs = 0): void {
    this.state = 'crashed';
    this.emit('crashed', { pid: 1, code: null, signal: 'SIGKILL', ranForMs } satisfies Crash);
  }
}

const until = async (what: string, probe: () => boolean): Promise<void> => {
  for (let i = 0; i < 200; i += 1) {
    if (probe()) return;
    await delay(5);
  }
  assert.fail(`timed out waiting for ${what}`);
};

function setup(backoff = { baseMs: 20, maxMs: 80 }) {
  const target = new FakeSupervisor();
  const logs = captureLogs('debug');
  let restarted = 0;
  const policy = new RestartPolicy({ target, logger: logs.logger, backoff, onRestarted: () => (restarted += 1) });
  const delays = (): unknown[] => logs.lines.filter((l) => l['msg'] === 'restarting haproxy after backoff').map((l) => l['delayMs']);
  return { target, policy, delays, restarted: () => restarted };
}

describe('RestartPolicy', () => {
  test('the first crash restarts at once and calls onRestarted', async () => {
    const s = setup();
    s.target.crash();
    await until('restarted', () => s.restarted() === 1);
    assert.equal(s.target.state, 'running');
    assert.deepEqual(s.delays(), [0]);
  });

  test('failed restarts back off, doubling up to the cap, until one succeeds', async () => {
    const s = setup();
    s.target.outcomes = ['fail', 'fail', 'fail', 'fail'];
    s.target.crash();
    await until('restarted', () => s.restarted() === 1);
    assert.equal(s.target.starts, 5);
    assert.deepEqual(s.delays(), [0, 20, 40, 80, 80]);
  });

  test('a crash after a stable run starts from no delay again', async () => {
    const s = setup();
    s.target.crash();
    await until('first restart', () => s.restarted() === 1);
    s.target.crash(0);
    await until('second restart', () => s.restarted() === 2);
    s.target.crash(60_000);
    await until('third restart', () => s.restarted() === 3);
    assert.deepEqual(s.delays(), [0, 20, 0]);
  });

  test('stop() during the backoff cancels the restart', async () => {
    const s = setup({ baseMs: 50, maxMs: 50 });
    s.target.outcomes = ['fail'];
    s.target.crash();
    await until('the failed first restart', () => s.delays().length === 2);
    await s.policy.stop();
    await delay(120);
    assert.equal(s.target.starts, 1);
    assert.equal(s.target.state, 'crashed');
    s.target.crash();
    await delay(30);
    assert.equal(s.target.starts, 1, 'crashes after stop() are left alone');
  });

  test('stop() waits for a restart in flight', async () => {
    const s = setup();
    let open: () => void = () => undefined;
    s.target.startGate = new Promise((resolve) => {
      open = resolve;
    });
    s.target.crash();
    await until('start() called', () => s.target.starts === 1);
    let stopped = false;
    const stopping = s.policy.stop().then(() => {
      stopped = true;
    });
    await delay(20);
    assert.equal(stopped, false, 'stop() returned while start() was still running');
    open();
    await stopping;
    assert.equal(s.target.state, 'running');
  });

  test('a supervisor no longer crashed when the timer fires (stopped meanwhile) is not started', async () => {
    const s = setup({ baseMs: 30, maxMs: 30 });
    s.target.outcomes = ['fail'];
    s.target.crash();
    await until('the failed first restart', () => s.delays().length === 2);
    s.target.state = 'stopped';
    await delay(80);
    assert.equal(s.target.starts, 1);
  });
});
