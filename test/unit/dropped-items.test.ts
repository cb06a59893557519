/** What the reconciler says about items left out of the configuration: once each, bounded. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DroppedItem } from '../../src/domain/snapshot.js';
import { DroppedItemLog, MAX_DROPPED_ITEM_LOG_LINES } from '../../src/reconcile/dropped-items.js';
import { captureLogs } from '../helpers/log-capture.js';

const item = (n: number, reason = 'bad address'): DroppedItem => ({ kind: 'endpoint', item: `service:default/api@ node-${n}/api`, reason });

test('an item is reported when it is first left out, again only for a new reason, and once when it is back', () => {
  const logs = captureLogs('debug');
  const log = new DroppedItemLog(logs.logger);
  assert.deepEqual(log.report([item(1)]), [item(1)]);
  assert.equal(log.report([item(1)]), undefined);
  assert.deepEqual(log.report([item(1, 'port 0')]), [item(1, 'port 0')]);
  assert.deepEqual(log.report([]), []);
  const msgs = logs.lines.map((l) => `${String(l.level)} ${String(l.msg)}`);
  assert.deepEqual(msgs, [
    'warn endpoint left out of the configuration; everything else keeps updating',
    'warn endpoint left out of the configuration; everything else keeps updating',
    'info endpoint no longer left out of the configuration',
  ]);
});

test('many items at once: at most MAX_DROPPED_ITEM_LOG_LINES lines and one summary', () => {
  const logs = captureLogs('debug');
  const log = new DroppedItemLog(logs.logger);
  const many = Array.from({ length: 500 }, (_, i) => item(i));
  assert.equal(log.report(many)?.length, 500);
  assert.equal(logs.lines.length, MAX_DROPPED_ITEM_LOG_LINES + 1);
  assert.equal(logs.lines.at(-1)?.msg, 'more items changed than logged one by one');
  assert.equal(logs.lines.at(-1)?.leftOut, 500);
});
