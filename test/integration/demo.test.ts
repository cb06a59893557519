/** The README's main command: the demo mesh comes up and answers through the mesh. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../../devtools/consul-dev-agent.js';

test('the demo mesh answers through web -> api over mTLS', { timeout: 120_000 }, async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'demo/run.ts'), '--check'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  assert.equal(code, 0, output);
  assert.match(output, /answered 'hello from api'/);
  assert.match(output, /curl http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(output, /demo: stopped/);
});
