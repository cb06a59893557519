/**
 * Reload reasons → bounded categories: a table of the texts plan.ts and reconcile.ts write, and
 * the reasons the real planner gives for typical changes, none of which may fall into `other`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { plan } from '../../src/haproxy/plan.js';
import { LEAF_FILE, upstreamBackendName, upstreamFrontendName } from '../../src/domain/haproxy-names.js';
import { reloadReasonCategories, reloadReasonCategory } from '../../src/telemetry/reload-reasons.js';
import { translate } from '../../src/translate/translate.js';
import { endpoint, PEM, roots, snapshot, upstream } from '../helpers/fixtures.js';

const RUN_DIR = '/run/haproxy-connect';
const api = upstream('api', { localBindPort: 9191 });

describe('reloadReasonCategory', () => {
  const cases: Array<[string, string]> = [
    ['initial configuration', 'initial'],
    ['global settings changed', 'settings'],
    [`frontend ${upstreamFrontendName(api.key)} added`, 'upstream'],
    [`backend ${upstreamBackendName(api.key)} removed`, 'upstream'],
    [`backend ${upstreamBackendName(api.key)} server node-1_12345678 added with host name api.example (not resolvable at runtime)`, 'upstream'],
    ['600 servers to add (more than 500: a reload is faster than runtime adds)', 'upstream'],
    ['frontend public_listener changed', 'listener'],
    ['backend local_app changed', 'listener'],
    ['file public.crtlist changed', 'listener'],
    ['backend spoe_intentions_agent added', 'intentions'],
    ['file spoe-intentions.conf added', 'intentions'],
    ['file intentions-epoch.map changed without a current epoch', 'intentions'],
    ['CA roots changed (1 added, 1 removed)', 'roots'],
    ['file roots.pem added', 'roots'],
    [`file ${LEAF_FILE} changed and is too large for a runtime update`, 'leaf'],
    ['drift: server upstream_api_1/s1 is missing', 'drift'],
    ['runtime update failed: add server upstream_api_1/s1: No such backend.', 'runtime-failure'],
    ['haproxy is crashed', 'restart'],
    ['frontend something_new added', 'other'],
    ['file unknown.txt added', 'other'],
    ['a reason nobody wrote yet', 'other'],
  ];
  for (const [reason, category] of cases) {
    test(`${reason} → ${category}`, () => assert.equal(reloadReasonCategory(reason), category));
  }

  test('categories of a reload are distinct and in a fixed order', () => {
    assert.deepEqual(reloadReasonCategories(['drift: x', `frontend ${upstreamFrontendName(api.key)} added`, `backend ${upstreamBackendName(api.key)} added`]), ['upstream', 'drift']);
    assert.deepEqual(reloadReasonCategories([]), ['other']);
  });
});

describe("the planner's reasons fall into named categories", () => {
  const base = translate(snapshot(), { runDir: RUN_DIR }).model;
  const cases: Array<{ what: string; desired: ReturnType<typeof translate>['model']; category: string }> = [
    {
      what: 'an upstream added',
      desired: translate(snapshot({ upstreams: [api], endpoints: [[api.key, [endpoint('node-1', '10.0.0.1')]]] }), { runDir: RUN_DIR }).model,
      category: 'upstream',
    },
    { what: 'the listener protocol changed', desired: translate(snapshot({ listener: { protocol: 'http' } }), { runDir: RUN_DIR }).model, category: 'listener' },
    { what: 'the thread count changed', desired: translate(snapshot(), { runDir: RUN_DIR, nbthread: 2 }).model, category: 'settings' },
    {
      what: 'a root added',
      desired: translate(snapshot({ roots: roots({ roots: [...roots().roots, { id: 'new', rootCertPem: PEM.ca2, intermediateCertsPem: [], active: false }] }) }), { runDir: RUN_DIR }).model,
      category: 'roots',
    },
    {
      what: 'intentions enforced',
      desired: translate(snapshot({ intentions: { defaultAllow: true, intentions: [] } }), { runDir: RUN_DIR }).model,
      category: 'intentions',
    },
  ];
  for (const { what, desired, category } of cases) {
    test(what, () => {
      const decision = plan(base, desired);
      assert.equal(decision.kind, 'reload');
      if (decision.kind !== 'reload') return;
      const categories = reloadReasonCategories(decision.reasons);
      assert.ok(categories.includes(category as never), `${JSON.stringify(decision.reasons)} → ${categories.join(',')}`);
      assert.ok(!categories.includes('other'), `${JSON.stringify(decision.reasons)} has an uncategorized reason`);
    });
  }
});
