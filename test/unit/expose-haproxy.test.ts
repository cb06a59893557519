/**
 * Exposed paths on the real HAProxy (HAPROXY_BIN): generated paths made of every printable
 * character a path may hold (quotes, `$`, `\`, `{`, `}`, `|`, `%`, non-ASCII...), translated and
 * rendered as the sidecar does, then asked for over raw HTTP/1.1. `haproxy -c` must accept each
 * configuration without a warning and hold exactly one ACL line per path (nothing injected);
 * each path must reach the app byte for byte, and the same path with one more character must get
 * the sidecar's 404. HAProxy refuses a request line holding a non-ASCII byte itself (400, measured
 * on 2.6.12 and 3.0.11; every printable ASCII character passes): such paths can never be asked for,
 * so they are counted, not compared, and most paths must get through.
 * Seed: EXPOSE_SEED (a number, or `random`), else a fixed one; printed on failure.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { freePorts } from '../../devtools/ports.js';
import { exposePathProblem, type ExposeConfig } from '../../src/domain/expose.js';
import { render } from '../../src/haproxy/render.js';
import { EXPOSED_CLUSTER_PREFIX, EXPOSED_FRONTEND_PREFIX } from '../../src/translate/expose.js';
import { translate } from '../../src/translate/translate.js';
import { snapshot } from '../helpers/fixtures.js';
import { serveChecked, stopAll } from '../helpers/haproxy-once.js';
import { send } from '../helpers/matcher-arbs.js';

const SEED_ENV = process.env['EXPOSE_SEED'];
const SEED = SEED_ENV === 'random' ? Math.floor(Math.random() * 2 ** 31) : Number(SEED_ENV ?? 20_261_204);
const RUNS = 12;
const PATHS_PER_RUN = 8;

/** Printable ASCII but `?` and `#` (exposePathProblem refuses them), and two non-ASCII letters. */
const PATH_CHARS = [...Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i)).filter((c) => c !== '?' && c !== '#'), 'é', '€'];
const pathArb = fc.array(fc.constantFrom(...PATH_CHARS), { minLength: 0, maxLength: 12 }).map((chars) => `/${chars.join('')}`);

const dir = mkdtempSync(join(tmpdir(), 'hc-expose-haproxy-'));
let app: Server;
let appPort = 0;

before(async () => {
  // The app answers 200 with the raw request target it received.
  app = createServer((req, res) => {
    const body = Buffer.from(`app:${req.url}`, 'latin1');
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length }).end(body);
  });
  [appPort = 0] = await freePorts(1);
  await new Promise<void>((resolve) => app.listen(appPort, '127.0.0.1', resolve));
});

after(async () => {
  stopAll();
  await new Promise((resolve) => app.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  served: number;
  refusedByHaproxy: number;
  problems: string[];
}

function status(response: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
}

/** The sidecar's exposed listener for `paths` alone, on the real HAProxy; every path asked for. */
async function exposeRun(paths: readonly string[], outcome: Outcome): Promise<void> {
  const [port = 0] = await freePorts(1);
  const expose: ExposeConfig = {
    checks: false,
    paths: paths.map((path, i) => ({ source: `Expose.Paths[${i}]`, listenerPort: port, path, localPathPort: appPort, protocol: 'http' as const })),
  };
  const base = snapshot({ listener: { bindAddress: '127.0.0.1' } });
  const { model, dropped } = translate({ ...base, registration: { ...base.registration, expose } }, { runDir: dir });
  assert.deepEqual(dropped, [], 'a path exposePathProblem accepts was dropped');
  const runDir = mkdtempSync(join(dir, 'run-'));
  // Only the exposed listener and its backend: the rest of the sidecar is not under test here.
  const local = {
    ...model,
    global: { ...model.global, runDir },
    frontends: model.frontends.filter((f) => f.name.startsWith(EXPOSED_FRONTEND_PREFIX)),
    backends: model.backends.filter((b) => b.name.startsWith(EXPOSED_CLUSTER_PREFIX)),
  };
  for (const file of local.files) {
    writeFileSync(join(runDir, file.name), file.content, { mode: file.mode });
    chmodSync(join(runDir, file.name), file.mode);
  }
  const text = render(local);
  const acls = text.split('\n').filter((l) => l.startsWith('    acl exposed_path path -m str '));
  assert.equal(acls.length, new Set(paths).size, `one ACL line per path:\n${text}`);
  const cfg = join(runDir, 'haproxy.cfg');
  writeFileSync(cfg, text);
  const haproxy = await serveChecked(cfg, port);
  try {
    for (const path of paths) {
      const ask = (target: string) => send(port, `GET ${target} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n`);
      const exact = await ask(path);
      if (status(exact) === 400) {
        outcome.refusedByHaproxy++;
        continue;
      }
      outcome.served++;
      const body = exact.slice(exact.indexOf('\r\n\r\n') + 4);
      if (status(exact) !== 200 || body !== `app:${Buffer.from(path, 'utf8').toString('latin1')}`) {
        outcome.problems.push(`${JSON.stringify(paths)}: ${JSON.stringify(path)} got ${JSON.stringify(exact.slice(0, 200))}`);
      }
      const longer = `${path}x`;
      if (paths.includes(longer)) continue;
      const other = await ask(longer);
      if (status(other) !== 404) outcome.problems.push(`${JSON.stringify(paths)}: ${JSON.stringify(longer)} (not exposed) got ${JSON.stringify(other.slice(0, 200))}`);
    }
  } finally {
    haproxy.stop();
  }
}

describe(`exposed paths on the real HAProxy: hostile paths are served exactly, nothing else is (seed ${SEED})`, () => {
  test(`${RUNS} configurations of ${PATHS_PER_RUN} generated paths each`, { timeout: 300_000 }, async (t) => {
    const sets = fc.sample(fc.uniqueArray(pathArb, { minLength: PATHS_PER_RUN, maxLength: PATHS_PER_RUN }), { seed: SEED, numRuns: RUNS });
    const outcome: Outcome = { served: 0, refusedByHaproxy: 0, problems: [] };
    for (const paths of sets) {
      for (const path of paths) assert.equal(exposePathProblem(path), undefined, `the generator made a path the parser refuses: ${JSON.stringify(path)}`);
      await exposeRun(paths, outcome);
    }
    t.diagnostic(`seed ${SEED}: ${outcome.served} paths served, ${outcome.refusedByHaproxy} refused by HAProxy's request parser (400)`);
    assert.deepEqual(outcome.problems.slice(0, 5), [], `seed ${SEED} (EXPOSE_SEED=${SEED}): ${outcome.problems.length} problem(s), the first ones shown`);
    // A test that cannot fail is a defect: most generated paths must reach the app.
    assert.ok(outcome.served >= (RUNS * PATHS_PER_RUN) / 2, `only ${outcome.served} of ${RUNS * PATHS_PER_RUN} paths were served`);
  });
});
