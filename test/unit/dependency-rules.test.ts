/**
 * The folder graph rules (.dependency-cruiser.cjs): the tree obeys them, and they do fail on a
 * forbidden direction, on a cycle and on a value import of a built-in src/builtins.ts reads (checked
 * on small trees written for the purpose).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { cruise, type ICruiseResult, type IConfiguration } from 'dependency-cruiser';

const require = createRequire(import.meta.url);
const rules = require('../../.dependency-cruiser.cjs') as IConfiguration;
const scratch = mkdtempSync(join(tmpdir(), 'hc-deps-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Violations of the rules in the tree under `baseDir` (its src/ only). */
async function violations(baseDir: string): Promise<string[]> {
  const { tsConfig: _tsConfig, ...options } = rules.options ?? {};
  const ruleSet = { forbidden: rules.forbidden ?? [], allowed: rules.allowed ?? [], allowedSeverity: rules.allowedSeverity ?? 'error' };
  // The repository's own tree resolves through its tsconfig; the scratch tree needs none.
  const result = (await cruise(['src'], { ...options, ...(baseDir === process.cwd() && { tsConfig: _tsConfig }), baseDir, validate: true, ruleSet } as never)).output as ICruiseResult;
  assert.ok((result.summary.totalDependenciesCruised ?? 0) > 0, 'nothing was cruised');
  return result.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`);
}

describe('the folder graph', () => {
  test('src/ obeys the rules', async () => {
    assert.deepEqual(await violations(process.cwd()), []);
  });

  test('a forbidden direction and a cycle are reported', async () => {
    mkdirSync(join(scratch, 'src/haproxy'), { recursive: true });
    mkdirSync(join(scratch, 'src/telemetry'), { recursive: true });
    mkdirSync(join(scratch, 'src/domain'), { recursive: true });
    writeFileSync(join(scratch, 'src/haproxy/render.ts'), "import { metric } from '../telemetry/metrics.js';\nexport const render = metric;\n");
    writeFileSync(join(scratch, 'src/telemetry/metrics.ts'), "import { render } from '../haproxy/render.js';\nexport const metric = 1;\nexport const again = render;\n");
    writeFileSync(join(scratch, 'src/domain/types.ts'), "import { render } from '../haproxy/render.js';\nexport const t = render;\n");
    const found = await violations(scratch);
    assert.ok(found.includes('not-in-allowed: src/haproxy/render.ts -> src/telemetry/metrics.ts'), found.join('\n'));
    assert.ok(found.includes('not-in-allowed: src/domain/types.ts -> src/haproxy/render.ts'), found.join('\n'));
    assert.ok(
      found.some((v) => v.startsWith('no-circular:')),
      found.join('\n'),
    );
  });

  test('node:http, node:https and node:util by value only through src/builtins.ts; type imports pass', async () => {
    const tree = join(scratch, 'builtins');
    mkdirSync(join(tree, 'src/consul'), { recursive: true });
    writeFileSync(join(tree, 'src/builtins.ts'), "export const http = process.getBuiltinModule('node:http');\n");
    writeFileSync(
      join(tree, 'src/consul/client.ts'),
      [
        "import http from 'node:http';",
        "import { request } from 'https';",
        "import { isDeepStrictEqual } from 'node:util';",
        "import type { Agent } from 'node:http';",
        "import { http as lazy } from '../builtins.js';",
        'export const all = [http, request, isDeepStrictEqual, lazy];',
        'export type A = Agent;',
        '',
      ].join('\n'),
    );
    const found = (await violations(tree)).filter((v) => v.startsWith('builtins-through-builtins-ts:'));
    assert.deepEqual(found.sort(), [
      'builtins-through-builtins-ts: src/consul/client.ts -> http',
      'builtins-through-builtins-ts: src/consul/client.ts -> https',
      'builtins-through-builtins-ts: src/consul/client.ts -> util',
    ]);
  });
});
