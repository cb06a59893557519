/** Spare server slots of the Data Plane API driver (src/dataplane/slots.ts), and what needs a reload with them. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MAX_SERVER_EDITS, runtimeLimits } from '../../src/dataplane/driver.js';
import { MIN_SLOTS, endpointNameOf, freeSlots, freshLayout, slotName, slotOf, slottedModel, withHolder } from '../../src/dataplane/slots.js';
import { render } from '../../src/haproxy/render.js';
import type { RuntimeOp } from '../../src/haproxy/runtime-ops.js';
import { translate } from '../../src/translate/translate.js';
import { endpoint, snapshot, upstream } from '../helpers/fixtures.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';
import { checkConfig } from '../../src/driver/check.js';

const RUN_DIR = '/run/hc';
const api = upstream('api', { protocol: 'http' });
const endpoints = Array.from({ length: 30 }, (_, i) => endpoint(`node-${i}`, `10.0.0.${i + 1}`));
const model = translate(snapshot({ upstreams: [api], endpoints: [[api.key, endpoints.slice(0, 2)]] }), { runDir: RUN_DIR }).model;
const backend = model.backends.find((b) => b.tls !== undefined)?.name as string;
const newServer = { name: 'node-9_new', address: '10.0.0.99', port: 21000, weight: 1 };
const add = (weight = 1): RuntimeOp => ({ kind: 'add-server', backend, server: { ...newServer, weight }, spec: '' });

describe('spare server slots', () => {
  test('every upstream backend gets free slots, none elsewhere; large backends get a share of their size', () => {
    const layout = freshLayout(model);
    assert.deepEqual([...layout.keys()], [backend]);
    assert.deepEqual(
      freeSlots(layout, backend),
      Array.from({ length: MIN_SLOTS }, (_, i) => slotName(i)),
    );
    const big = translate(snapshot({ upstreams: [api], endpoints: [[api.key, endpoints]] }), { runDir: RUN_DIR }).model;
    assert.equal(freeSlots(freshLayout(big), backend).length, 8);
  });

  test('free slots are written in maintenance with the TLS options; a held slot carries its endpoint', () => {
    const layout = withHolder(freshLayout(model), backend, slotName(0), newServer.name);
    const withNew = { ...model, backends: model.backends.map((b) => (b.name === backend ? { ...b, servers: [...b.servers, newServer] } : b)) };
    const text = render(slottedModel(withNew, layout));
    assert.match(text, new RegExp(`server ${slotName(1)} 127\\.0\\.0\\.1:1 weight 1 ssl verify required crt \\S+ ca-file \\S+ .* disabled\\n`));
    assert.match(text, new RegExp(`server ${slotName(0)} 10\\.0\\.0\\.99:21000 weight 1 ssl `));
    assert.doesNotMatch(text, new RegExp(`server ${newServer.name} `), 'the endpoint appears under its slot only');
    assert.equal(slotOf(layout, backend, newServer.name), slotName(0));
    assert.equal(endpointNameOf(layout, backend, slotName(0)), newServer.name);
    assert.equal(endpointNameOf(layout, backend, slotName(1)), undefined, 'a free slot is no endpoint');
    assert.equal(endpointNameOf(layout, backend, 'other'), 'other');
    assert.deepEqual(freeSlots(withHolder(layout, backend, slotName(0), undefined), backend).length, MIN_SLOTS);
  });

  test('a removed endpoint stays as a free slot under its own name, written in maintenance', () => {
    const own = model.backends.find((b) => b.name === backend)?.servers[0]?.name as string;
    const layout = withHolder(freshLayout(model), backend, own, undefined);
    assert.deepEqual(freeSlots(layout, backend), [...Array.from({ length: MIN_SLOTS }, (_, i) => slotName(i)), own]);
    const without = { ...model, backends: model.backends.map((b) => (b.name === backend ? { ...b, servers: b.servers.filter((s) => s.name !== own) } : b)) };
    assert.match(render(slottedModel(without, layout)), new RegExp(`server ${own} 127\\.0\\.0\\.1:1 .* disabled\\n`));
    assert.equal(endpointNameOf(layout, backend, own), undefined);
  });

  test('a freed slot is written with the values HAProxy still holds for it, not the placeholder', () => {
    // The API changes at runtime only what differs from its file: a placeholder in the file for a
    // server HAProxy holds at 10.0.0.7:21000 weight 5 would hide a later change back to weight 1.
    const own = model.backends.find((b) => b.name === backend)?.servers[0]?.name as string;
    const layout = withHolder(freshLayout(model), backend, own, undefined);
    const without = { ...model, backends: model.backends.map((b) => (b.name === backend ? { ...b, servers: b.servers.filter((s) => s.name !== own) } : b)) };
    const held = (b: string, s: string) => (b === backend && s === own ? { address: '10.0.0.7', port: 21000, weight: 5 } : undefined);
    const text = render(slottedModel(without, layout, held));
    assert.match(text, new RegExp(`server ${own} 10\\.0\\.0\\.7:21000 weight 5 .* disabled\\n`));
    assert.match(text, new RegExp(`server ${slotName(0)} 127\\.0\\.0\\.1:1 weight 1 .* disabled\\n`), 'slots without held values keep the placeholder');
  });

  test('haproxy -c accepts a configuration with slots', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'hc-slots-'));
    try {
      const inDir = translate(snapshot({ upstreams: [api], endpoints: [[api.key, endpoints.slice(0, 2)]] }), { runDir }).model;
      for (const file of inDir.files) await writeFile(join(runDir, file.name), file.content, { mode: file.mode });
      await writeFile(join(runDir, 'haproxy.cfg'), render(slottedModel(inDir, freshLayout(inDir))));
      await checkConfig(HAPROXY_BIN, join(runDir, 'haproxy.cfg'));
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  });

  test('an add needs a reload only without a free slot', () => {
    const layout = freshLayout(model);
    assert.deepEqual(runtimeLimits([add()], layout), []);
    assert.deepEqual(
      runtimeLimits(
        Array.from({ length: MIN_SLOTS }, () => add()),
        layout,
      ),
      [],
    );
    assert.match(
      runtimeLimits(
        Array.from({ length: MIN_SLOTS + 1 }, () => add()),
        layout,
      ).join(),
      /no free server slot left in backend/,
    );
    assert.deepEqual(runtimeLimits([add(3), { kind: 'set-weight', backend, server: 'x', weight: 2 }], layout), []);
    const weights = (n: number): RuntimeOp[] => Array.from({ length: n }, (_, i) => ({ kind: 'set-weight', backend, server: `s${i}`, weight: 2 }));
    assert.deepEqual(runtimeLimits(weights(MAX_SERVER_EDITS), layout), []);
    assert.match(runtimeLimits(weights(MAX_SERVER_EDITS + 1), layout).join(), /one reload is faster/);
  });
});
