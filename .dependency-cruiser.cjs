/**
 * The folder graph of src/, enforced in CI (`npm run lint:deps`). Data flows one way:
 *
 *   config ─▶ consul (client, watch loop) ─▶ snapshot (fold, watch set) ─▶ translate (pure)
 *     ─▶ haproxy (model, validate, render, plan: pure) ─▶ driver (process, runtime API, master
 *     CLI, files: I/O) ─▶ dataplane (the Data Plane API driver, on the driver's interface) ─▶
 *     reconcile (the loop)
 *
 * with the leaves beside it: domain (plain types and pure rules every layer shares; imports
 * nothing), spiffe, spoe (the SPOP wire protocol), intentions (decisions and the SPOE authorizer),
 * telemetry (logs, metrics, health: observes through interfaces it defines). main.ts, cli.ts and
 * sidecar/ (the parts main.ts starts and stops) are the composition root: the only files that know
 * every part. errors.ts, logger.ts, version.ts, http-exchange.ts (one HTTP exchange over node:http)
 * and builtins.ts (the Node built-ins read without an ESM import) are shared by all. Every import
 * between folders must match one `allowed` rule.
 */
const shared = '^src/(errors|logger|version|http-exchange|builtins)[.]ts$';
const layer = (name, may) => ({
  comment: `${name} may import ${may.length === 0 ? 'only itself, domain and the shared files' : `itself, ${may.join(', ')}, domain and the shared files`}`,
  from: { path: `^src/${name}/` },
  to: { path: [`^src/${name}/`, '^src/domain/', shared, ...may.map((m) => `^src/${m}/`)] },
});

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'no import cycles, between files or folders', from: {}, to: { circular: true } },
    { name: 'no-orphans', severity: 'error', comment: 'every source file is used', from: { orphan: true, path: '^src/', pathNot: '[.]d[.]ts$|^src/cli[.]ts$' }, to: {} },
    {
      name: 'builtins-through-builtins-ts',
      severity: 'error',
      comment: 'node:http, node:https and node:util are read through src/builtins.ts: their ESM import loads undici and some forty more modules on Node 24',
      from: { path: '^src/', pathNot: '^src/builtins[.]ts$' },
      to: { dependencyTypes: ['core'], dependencyTypesNot: ['type-only'], path: '^(node:)?(http|https|util)$' },
    },
    { name: 'no-test-code-in-src', severity: 'error', comment: 'test doubles and helpers live under test/ and devtools/', from: { path: '^src/' }, to: { path: '^(test|devtools|bench|demo)/' } },
  ],
  allowed: [
    { comment: 'node built-ins and npm packages', from: {}, to: { dependencyTypes: ['core', 'npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-no-pkg', 'npm-unknown'] } },
    { comment: 'domain imports nothing but itself and errors.ts', from: { path: '^src/domain/' }, to: { path: ['^src/domain/', '^src/errors[.]ts$'] } },
    { comment: 'the shared files import nothing of src but each other (version.ts reads package.json)', from: { path: shared }, to: { path: [shared, '^package[.]json$'] } },
    layer('spiffe', []),
    layer('spoe', []),
    layer('config', []),
    layer('consul', []),
    layer('snapshot', ['consul']),
    layer('intentions', ['spiffe', 'spoe']),
    layer('haproxy', []),
    layer('driver', ['haproxy']),
    layer('dataplane', ['haproxy', 'driver']),
    layer('translate', ['haproxy']),
    layer('telemetry', ['config']),
    layer('reconcile', ['translate', 'haproxy', 'driver', 'snapshot']),
    { comment: 'the composition root knows every part', from: { path: ['^src/(main|cli)[.]ts$', '^src/sidecar/'] }, to: { path: '^src/' } },
    { comment: 'tests, the harness, the bench and the demo may use anything', from: { path: '^(test|devtools|bench|demo)/' }, to: {} },
  ],
  allowedSeverity: 'error',
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
