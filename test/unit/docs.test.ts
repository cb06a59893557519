/** The README documents every flag and every error code the code defines. */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { FLAGS } from '../../src/config/config.js';
import { ERROR_CODES } from '../../src/errors.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

test('every flag is in the README', () => {
  for (const flag of FLAGS) assert.ok(readme.includes(`\`-${flag.name}`), `README lacks -${flag.name}`);
});

test('every error code is in the README with its meaning', () => {
  for (const [code, meaning] of Object.entries(ERROR_CODES)) {
    const escaped = meaning.replace('haproxy -c', '`haproxy -c`');
    assert.ok(readme.includes(`| \`${code}\` | ${escaped} |`), `README lacks ${code}: ${meaning}`);
  }
});

test("the README's layout table names every folder and top-level file of src/", () => {
  const src = new URL('../../src/', import.meta.url);
  const rows = readme.split('\n').filter((line) => line.startsWith('| `src/'));
  for (const entry of readdirSync(src, { withFileTypes: true })) {
    const name = entry.isDirectory() ? `\`src/${entry.name}/\`` : `\`src/${entry.name}\``;
    assert.ok(
      rows.some((row) => row.split('|')[1]?.includes(name)),
      `README layout table lacks ${name}`,
    );
  }
});
