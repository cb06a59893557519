/** The bin's shebang: how Node starts the daemon (and how tests and the bench start it the same way). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { daemonNode, parseShebang } from '../../devtools/daemon-node.js';

test('parseShebang reads the environment and the Node flags of an `env -S` line', () => {
  assert.deepEqual(parseShebang('#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1 --foo'), { args: ['--max-semi-space-size=1', '--foo'], env: { MALLOC_ARENA_MAX: '2' } });
  assert.deepEqual(parseShebang('#!/usr/bin/env node'), { args: [], env: {} });
  assert.throws(() => parseShebang('#!/usr/bin/env -S deno run'), /does not run node/);
});

test("the daemon's young generation is capped: under churn the default semi-space grew RSS by about 30 MiB", () => {
  assert.ok(daemonNode().args.includes('--max-semi-space-size=1'), JSON.stringify(daemonNode()));
});
