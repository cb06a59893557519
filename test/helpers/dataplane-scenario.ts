/**
 * One scenario for the Data Plane API driver, run against the real API (test/integration/
 * dataplane-api.test.ts, which records the exchanges) and replayed from that recording in CI
 * (test/unit/dataplane-replay.test.ts). A small reconcile loop: plan each step, apply it at
 * runtime when the driver can, else activate (start or reload), as src/reconcile does.
 */
import assert from 'node:assert/strict';
import { plan } from '../../src/haproxy/plan.js';
import type { HaproxyModel } from '../../src/haproxy/model.js';
import { render } from '../../src/haproxy/render.js';
import { translate } from '../../src/translate/translate.js';
import type { DataplaneDriver } from '../../src/dataplane/driver.js';
import type { DataplaneExchange } from '../../src/dataplane/client.js';
import type { LiveState } from '../../src/driver/driver.js';
import { PEM, endpoint, publicListener, snapshot, upstream, webLeaf } from './fixtures.js';

export interface ScenarioPorts {
  publicPort: number;
  apiPort: number;
  dbPort: number;
}

export interface ScenarioStep {
  name: string;
  /** What the loop did: started, reloaded, runtime (ops applied), or read (live state). */
  outcome: string;
  ops?: string[];
  live?: LiveState;
  /** How long the step took, from the plan to the answer of the last request. */
  ms: number;
}

const allow = { defaultAllow: true, intentions: [] };
const deny = { defaultAllow: false, intentions: [] };

/** The models of the scenario, in order, for the given run directory and ports. */
export function scenarioModels(runDir: string, ports: ScenarioPorts): Array<{ name: string; model: HaproxyModel; unsaved?: true; readBack?: true }> {
  const api = upstream('api', { protocol: 'http', localBindPort: ports.apiPort });
  const db = upstream('db', { localBindPort: ports.dbPort });
  const dbSlow = { ...db, connectTimeoutMs: 9000 };
  const e1 = endpoint('node-1', '10.0.0.1');
  const e2 = endpoint('node-2', '10.0.0.2');
  const e2moved = endpoint('node-2', '10.0.0.22', 21002);
  const e3 = endpoint('node-3', '10.0.0.3');
  const e3heavy = endpoint('node-3', '10.0.0.3', 21000, 2);
  const e4 = endpoint('node-4', '10.0.0.4');
  const rotated = webLeaf({ certPem: PEM.apiCert, privateKeyPem: PEM.apiKey, serialNumber: 'aa:01', modifyIndex: 43 });
  const build = (apiEndpoints: ReturnType<typeof endpoint>[], intentions = allow, leaf = webLeaf(), dbUpstream = db): HaproxyModel =>
    translate(
      snapshot({
        listener: publicListener({ bindAddress: '127.0.0.1', bindPort: ports.publicPort }),
        upstreams: [api, dbUpstream],
        endpoints: [
          [api.key, apiEndpoints],
          [db.key, [e1]],
        ],
        intentions,
        leaf,
      }),
      { runDir },
    ).model;
  return [
    { name: 'initial configuration', model: build([e1, e2]) },
    { name: 'endpoint moved', model: build([e1, e2moved]) },
    { name: 'endpoint removed', model: build([e1]) },
    { name: 'intentions changed', model: build([e1], deny) },
    { name: 'endpoint added', model: build([e1, e3], deny) },
    { name: 'endpoint weight changed', model: build([e1, e3heavy], deny) },
    { name: 'leaf rotated', model: build([e1, e3heavy], deny, rotated), readBack: true },
    { name: 'upstream timeout changed', model: build([e1, e3heavy], deny, rotated, dbSlow) },
    { name: 'endpoint removed again', model: build([e1], deny, rotated, dbSlow) },
    { name: 'endpoint back, unchanged', model: build([e1, e3heavy], deny, rotated, dbSlow) },
    // No save between these three: a slot taken, freed at runtime and taken again while the API's
    // file still says it is ready (the API applies only what differs from its file).
    { name: 'endpoint added after the reload', model: build([e1, e3heavy, e2], deny, rotated, dbSlow), unsaved: true },
    { name: 'endpoint removed, not saved', model: build([e1, e3heavy], deny, rotated, dbSlow), unsaved: true },
    { name: 'endpoint added into the slot freed before a save', model: build([e1, e3heavy, e4], deny, rotated, dbSlow) },
  ];
}

/** Runs the scenario through `driver`; every step's outcome, and the live state read at the end. */
export async function runScenario(driver: DataplaneDriver, runDir: string, ports: ScenarioPorts, signal: AbortSignal): Promise<ScenarioStep[]> {
  const steps: ScenarioStep[] = [];
  let applied: HaproxyModel | undefined;
  for (const { name, model, unsaved, readBack } of scenarioModels(runDir, ports)) {
    const text = render(model);
    const startedAt = performance.now();
    const ms = (): number => Math.round(performance.now() - startedAt);
    if (applied === undefined) {
      steps.push({ name, outcome: await driver.activate(model, text, signal), ms: ms() });
      applied = model;
      continue;
    }
    const decision = plan(applied, model);
    if (decision.kind === 'runtime' && driver.runtimeLimits(decision.ops).length === 0) {
      const results = await driver.applyRuntime(decision.ops, signal);
      for (const r of results) assert.equal(r.status, 'ok', `${name}: ${r.op.kind} ${r.error?.message ?? ''}`);
      const applyMs = ms();
      if (unsaved !== true) {
        driver.persist(model, text);
        await driver.flushed();
      }
      steps.push({ name, outcome: 'runtime', ops: decision.ops.map((op) => op.kind), ms: applyMs, ...(readBack === true && { live: await driver.readLive(model, signal) }) });
    } else if (decision.kind !== 'none') {
      steps.push({ name, outcome: await driver.activate(model, text, signal), ms: ms() });
    } else steps.push({ name, outcome: 'none', ms: ms() });
    applied = model;
  }
  if (applied !== undefined) {
    const startedAt = performance.now();
    const live = await driver.readLive(applied, signal);
    steps.push({ name: 'read back', outcome: 'read', live, ms: Math.round(performance.now() - startedAt) });
  }
  return steps;
}

/** The outcomes the scenario must give, with either the real API or the replay. */
export const EXPECTED_OUTCOMES = [
  ['initial configuration', 'started'],
  ['endpoint moved', 'runtime'],
  ['endpoint removed', 'runtime'],
  ['intentions changed', 'runtime'],
  ['endpoint added', 'runtime'],
  ['endpoint weight changed', 'runtime'],
  ['leaf rotated', 'runtime'],
  ['upstream timeout changed', 'reloaded'],
  ['endpoint removed again', 'runtime'],
  ['endpoint back, unchanged', 'runtime'],
  ['endpoint added after the reload', 'runtime'],
  ['endpoint removed, not saved', 'runtime'],
  ['endpoint added into the slot freed before a save', 'runtime'],
  ['read back', 'read'],
] as const;

export const RUN_DIR_PLACEHOLDER = '<RUN>';
const BOUNDARY = /haproxy-connect-[0-9a-f]{24}/g;

/** An exchange with the run directory and the multipart boundary made stable, for recordings. */
export function normalizeExchange(exchange: DataplaneExchange, runDir: string): DataplaneExchange {
  const norm = (text: string): string => text.split(runDir).join(RUN_DIR_PLACEHOLDER).replace(BOUNDARY, 'haproxy-connect-BOUNDARY');
  const { request, response } = exchange;
  return {
    request: {
      method: request.method,
      path: norm(request.path),
      query: Object.fromEntries(Object.entries(request.query).map(([k, v]) => [k, norm(v)])),
      ...(request.contentType !== undefined && { contentType: norm(request.contentType) }),
      ...(request.body !== undefined && { body: norm(request.body) }),
    },
    response: { status: response.status, body: norm(response.body) },
  };
}

export interface Recording {
  api: string;
  haproxy: string;
  ports: ScenarioPorts;
  exchanges: DataplaneExchange[];
}
