/**
 * The Data Plane API driver without the real API (CI cannot install it): the scenario of
 * test/helpers/dataplane-scenario.ts against a fake API that answers from the recording the
 * integration test made against the real v2.9.27 (test/fixtures/dataplaneapi/). Every request the
 * driver sends must match the recorded one and conform to the API's own specification, as served
 * by that binary at /v2/specification.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { DataplaneApiProcess } from '../../src/dataplane/api-process.js';
import { DataplaneClient, type DataplaneExchange } from '../../src/dataplane/client.js';
import { DataplaneDriver, type DataplaneApi, type SupervisedHaproxy } from '../../src/dataplane/driver.js';
import { ManagedFiles } from '../../src/driver/files.js';
import type { RuntimeSession } from '../../src/driver/runtime-session.js';
import { type RuntimeCommand, isExpected } from '../../src/haproxy/runtime-ops.js';
import { captureLogs } from '../helpers/log-capture.js';
import { EXPECTED_OUTCOMES, RUN_DIR_PLACEHOLDER, type Recording, normalizeExchange, runScenario } from '../helpers/dataplane-scenario.js';
import { loadSpec, validateRequest, type Violation } from '../helpers/openapi2.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/dataplaneapi/', import.meta.url));
const spec = loadSpec(join(FIXTURES, 'specification-v2.9.27.json'));
const recording = JSON.parse(readFileSync(join(FIXTURES, 'recording-v2.9.27.json'), 'utf8')) as Recording;
const dirs: string[] = [];

after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** The spec's view of a recorded request: JSON bodies parsed, text bodies as text. */
function violationsOf(request: DataplaneExchange['request']): Violation[] {
  const json = request.contentType === 'application/json';
  return validateRequest(spec, {
    method: request.method,
    path: `/v2${request.path}`,
    query: request.query,
    ...(request.body !== undefined && { body: json ? (JSON.parse(request.body) as unknown) : request.body }),
    ...(request.contentType !== undefined && { contentType: request.contentType.split(';')[0] as string }),
  });
}

interface ReplayResult {
  outcomes: Array<[string, string]>;
  mismatches: string[];
  violations: string[];
  served: number;
  /** The first line of each command sent to HAProxy's own runtime API. */
  runtime: string[];
}

/**
 * HAProxy's runtime API as the driver uses it beside the Data Plane API (loading a leaf, reading
 * it back), answering as HAProxy 2.6 does on success.
 */
function fakeHaproxyRuntime(runtime: string[]): () => Promise<RuntimeSession> {
  let serial = 'NONE';
  const answer = (first: string, payload?: string): string => {
    runtime.push(first);
    if (first.startsWith('set ssl cert ')) {
      serial = new X509Certificate(payload ?? '').serialNumber;
      return `Transaction created for certificate ${first.slice('set ssl cert '.length)}!`;
    }
    if (first.startsWith('commit ssl cert ')) return `Committing ${first.slice('commit ssl cert '.length)}\nSuccess!`;
    if (first.startsWith('show ssl cert '))
      return `Filename: ${first.slice('show ssl cert '.length)}\nStatus: Used\nSerial: ${serial}\nnotBefore: Jan  1 00:00:00 2025 GMT\nnotAfter: Jan  1 00:00:00 2125 GMT`;
    return `Unknown command: ${first}`;
  };
  const session = {
    send: async (line: string) => answer(line),
    run: async (cmd: RuntimeCommand) => {
      const got = answer(cmd.line, cmd.payload);
      assert.ok(isExpected(cmd, got), `${cmd.line} -> ${got}`);
      return got;
    },
    close: () => undefined,
  };
  return async () => session as unknown as RuntimeSession;
}

/** Runs the scenario against a fake API serving `exchanges` in order. */
async function replay(exchanges: readonly DataplaneExchange[]): Promise<ReplayResult> {
  const runDir = await mkdtemp(join(tmpdir(), 'hc-dp-replay-'));
  dirs.push(runDir);
  const socketPath = join(runDir, 'dataplane.sock');
  const mismatches: string[] = [];
  const violations: string[] = [];
  let next = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://dataplane');
      const body = chunks.length > 0 ? Buffer.concat(chunks).toString('utf8') : undefined;
      const contentType = req.headers['content-type'];
      const seen = normalizeExchange(
        {
          request: {
            method: req.method ?? '',
            path: url.pathname.replace(/^\/v2/, ''),
            query: Object.fromEntries(url.searchParams),
            ...(contentType !== undefined && { contentType }),
            ...(body !== undefined && { body }),
          },
          response: { status: 0, body: '' },
        },
        runDir,
      ).request;
      for (const v of violationsOf(seen)) violations.push(`${seen.method} ${seen.path}: ${v.where}: ${v.message}`);
      const expected = exchanges[next];
      if (expected === undefined) {
        mismatches.push(`unexpected request ${seen.method} ${seen.path} after the recording ended`);
        res.writeHead(500).end('{"code":500,"message":"not recorded"}');
        return;
      }
      next++;
      try {
        assert.deepEqual(seen, expected.request);
      } catch (err) {
        mismatches.push(`request ${next}: ${(err as Error).message.slice(0, 600)}`);
      }
      res.writeHead(expected.response.status, { 'content-type': 'application/json' }).end(expected.response.body.split(RUN_DIR_PLACEHOLDER).join(runDir));
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const client = new DataplaneClient({ socketPath, user: 'u', password: 'p' });
  let state: SupervisedHaproxy['state'] = 'stopped';
  const haproxy: SupervisedHaproxy = {
    get state() {
      return state;
    },
    pid: 4242,
    start: async () => {
      state = 'running';
    },
    reload: async (trigger) => {
      await trigger?.();
    },
  };
  const api: DataplaneApi = {
    state: 'running',
    client,
    start: async () => undefined,
    ready: async () => undefined,
    restart: async () => undefined,
    startedBeforeHaproxy: true,
  } as Pick<DataplaneApiProcess, keyof DataplaneApi> as DataplaneApi;
  const runtime: string[] = [];
  const driver = new DataplaneDriver({ haproxy, api, files: new ManagedFiles(runDir), runDir, logger: captureLogs().logger, openHaproxyRuntime: fakeHaproxyRuntime(runtime) });
  try {
    const steps = await runScenario(driver, runDir, recording.ports, new AbortController().signal);
    return { outcomes: steps.map((s) => [s.name, s.outcome]), mismatches, violations, served: next, runtime: runtime.map((line) => line.split(runDir).join(RUN_DIR_PLACEHOLDER)) };
  } finally {
    client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('Data Plane API driver, replayed against the v2.9.27 recording', () => {
  test('the recording is of v2.9.27 and every recorded request conforms to its specification', () => {
    assert.match(recording.api, /^v2\.9\.27\b/);
    assert.ok(recording.exchanges.length >= 20, `${recording.exchanges.length} exchanges`);
    const problems = recording.exchanges.flatMap((e) => violationsOf(e.request).map((v) => `${e.request.method} ${e.request.path}: ${v.where}: ${v.message}`));
    assert.deepEqual(problems, []);
  });

  test('the driver sends exactly the recorded requests, all conforming, and reaches the same outcomes', async () => {
    const result = await replay(recording.exchanges);
    assert.deepEqual(result.mismatches, []);
    assert.deepEqual(result.violations, []);
    assert.equal(result.served, recording.exchanges.length, 'every recorded exchange was used');
    assert.deepEqual(
      result.outcomes,
      EXPECTED_OUTCOMES.map(([n, o]) => [n, o]),
    );
    // The leaf, stored through the API, is loaded through HAProxy's runtime API: the one change there.
    const leaf = `${RUN_DIR_PLACEHOLDER}/leaf.pem`;
    assert.deepEqual(result.runtime, [`set ssl cert ${leaf}`, `commit ssl cert ${leaf}`, `show ssl cert ${leaf}`, `show ssl cert ${leaf}`, `show ssl cert ${leaf}`]);
  });

  test('a request that differs from the recording is reported', async () => {
    // The recording expects another intentions epoch key: the driver's real one no longer matches.
    const tampered = recording.exchanges.map((e) =>
      e.request.path.startsWith('/services/haproxy/runtime/maps_entries') && e.request.method === 'POST' ? { ...e, request: { ...e.request, body: '{"key":"0000","value":"1"}' } } : e,
    );
    assert.notDeepEqual(tampered, recording.exchanges, 'the recording holds an epoch change to tamper with');
    const result = await replay(tampered);
    assert.ok(result.mismatches.length > 0);
  });

  test('a request outside the specification is reported', () => {
    const first = recording.exchanges.find((e) => e.request.path === '/services/haproxy/configuration/raw' && e.request.method === 'POST');
    assert.ok(first);
    assert.deepEqual(violationsOf(first.request), []);
    assert.notDeepEqual(violationsOf({ ...first.request, query: { ...first.request.query, reload: 'now' } }), []);
    assert.notDeepEqual(violationsOf({ ...first.request, method: 'PATCH' }), []);
    const put = recording.exchanges.find((e) => e.request.path.startsWith('/services/haproxy/runtime/maps_entries/') && e.request.method === 'PUT');
    assert.ok(put);
    assert.notDeepEqual(violationsOf({ ...put.request, body: '{"value":5}' }), []);
    // The server model closes its properties (additionalProperties: false over its allOf members).
    const edit = recording.exchanges.find((e) => e.request.path.startsWith('/services/haproxy/configuration/servers/') && e.request.method === 'PUT');
    assert.ok(edit?.request.body);
    assert.deepEqual(violationsOf(edit.request), []);
    const withUnknown = JSON.stringify({ ...(JSON.parse(edit.request.body) as object), enabled: true });
    assert.match(
      violationsOf({ ...edit.request, body: withUnknown })
        .map((v) => v.message)
        .join(),
      /unknown property/,
    );
  });
});
