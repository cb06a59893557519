/**
 * The planner: live model + desired model → nothing, runtime API ops, or a reload (with its
 * reasons). PURE. Reloads cost a few failed keep-alive requests (FACTS §3), so only structural
 * changes and CA roots changes reload; endpoints, the leaf, the intentions epoch and HTTP split
 * weights go through the runtime API.
 *
 * Op order: the leaf first, then per backend adds, address changes, weight changes and removals
 * last, so a backend whose endpoint is replaced never runs empty in between.
 */
import { isIP } from 'node:net';
import { isDeepStrictEqual } from '../builtins.js';
import type { Backend, Frontend, HaproxyModel, ModelFile, Server } from './model.js';
import { INTENTIONS_EPOCH_CURRENT_KEY, INTENTIONS_EPOCH_MAP_FILE, LEAF_FILE, ROOTS_FILE, ROUTE_SPLITS_MAP_FILE } from '../domain/haproxy-names.js';
import { fitsPayload, type RuntimeOp } from './runtime-ops.js';
import { serverSpec } from './server-line.js';
import { runDirPath } from '../domain/haproxy-names.js';

/**
 * More TLS servers than this to add at once go through a reload instead: each runtime `add server`
 * builds its own TLS context (measured on 2.6.12: 1.2 ms per add for 1,000, 2.1 ms for 10,000 —
 * 21 s in all), while a reload with 1,000 TLS upstreams is ready in about 170 ms (FACTS §2).
 */
export const MAX_RUNTIME_SERVER_ADDS = 500;

export type Plan = { kind: 'none' } | { kind: 'runtime'; ops: RuntimeOp[] } | { kind: 'reload'; reasons: string[] };

/** Files the runtime API can update; any other file change needs a reload. */
const RUNTIME_FILES: ReadonlySet<string> = new Set([LEAF_FILE, ROOTS_FILE, INTENTIONS_EPOCH_MAP_FILE, ROUTE_SPLITS_MAP_FILE]);
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Certificates of a bundle, whitespace-normalised so formatting alone is not a change. */
export function pemCertificates(pem: string): string[] {
  return (pem.match(PEM_CERT) ?? []).map((block) => block.replace(/\s+/g, ''));
}

/** `current <epoch>` and `<epoch> 1` lines of the intentions epoch map (translate/spoe.ts). */
function epochMapKeys(content: string): { current: string | undefined; valid: string[] } {
  let current: string | undefined;
  const valid: string[] = [];
  for (const line of content.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key === undefined || key === '' || value === undefined) continue;
    if (key === INTENTIONS_EPOCH_CURRENT_KEY) current = value;
    else valid.push(key);
  }
  return { current, valid };
}

/** `<key> <cut>` lines of the splits map (translate.ts), by key. */
function splitCuts(content: string): Map<string, number> {
  const cuts = new Map<string, number>();
  for (const line of content.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key !== undefined && key !== '' && value !== undefined) cuts.set(key, Number(value));
  }
  return cuts;
}

/** New cut points when the splits map keeps its keys (only weights changed); undefined when the keys differ. */
function changedCuts(before: string, after: string): Array<readonly [string, number]> | undefined {
  const old = splitCuts(before);
  const now = splitCuts(after);
  if (old.size !== now.size || [...now.keys()].some((key) => !old.has(key))) return undefined;
  return [...now].filter(([key, cut]) => old.get(key) !== cut);
}

function byName<T extends { name: string }>(items: readonly T[]): Map<string, T> {
  return new Map(items.map((item) => [item.name, item]));
}

function withoutServers(backend: Backend): Omit<Backend, 'servers'> {
  const { servers: _servers, ...rest } = backend;
  return rest;
}

/** A frontend without what diffAccessLogs and diffPermissions report on their own. */
function withoutAccessLog(frontend: Frontend): Omit<Frontend, 'accessLog'> {
  const { accessLog: _accessLog, ...rest } = frontend;
  if (rest.spoe?.http === undefined) return rest;
  return { ...rest, spoe: { ...rest.spoe, http: { policies: [] } } };
}

/** The L7 policies rendered as ACL chains changed (a permission change): a reload. */
function diffPermissions(before: readonly Frontend[], after: readonly Frontend[], reasons: string[]): void {
  const old = byName(before);
  for (const frontend of after) {
    const prev = old.get(frontend.name)?.spoe?.http?.policies;
    const now = frontend.spoe?.http?.policies;
    if (prev === undefined || now === undefined || isDeepStrictEqual(prev, now)) continue;
    const ids = new Set(prev.map((p) => p.id));
    const added = now.filter((p) => !ids.has(p.id)).length;
    reasons.push(`frontend ${frontend.name} L7 permissions changed (${added} polic${added === 1 ? 'y' : 'ies'} added, ${prev.length - (now.length - added)} removed)`);
  }
}

/** Consul's AccessLogs changed what a kept frontend logs (captures, format): a reload. */
function diffAccessLogs(before: readonly Frontend[], after: readonly Frontend[], reasons: string[]): void {
  const old = byName(before);
  for (const frontend of after) {
    const prev = old.get(frontend.name);
    if (prev !== undefined && !isDeepStrictEqual(prev.accessLog, frontend.accessLog)) reasons.push(`frontend ${frontend.name} access log changed`);
  }
}

/** Reasons for added, removed and changed named items (`frontend x added`, ...). */
function diffNamed<T extends { name: string }>(kind: string, before: readonly T[], after: readonly T[], same: (a: T, b: T) => boolean, reasons: string[]): void {
  const old = byName(before);
  for (const item of after) {
    const prev = old.get(item.name);
    if (prev === undefined) reasons.push(`${kind} ${item.name} added`);
    else if (!same(prev, item)) reasons.push(`${kind} ${item.name} changed`);
  }
  const now = byName(after);
  for (const item of before) if (!now.has(item.name)) reasons.push(`${kind} ${item.name} removed`);
}

function diffFiles(before: readonly ModelFile[], after: readonly ModelFile[], runDir: string, reasons: string[], tlsOps: RuntimeOp[]): void {
  const old = byName(before);
  const now = byName(after);
  for (const file of after) {
    const prev = old.get(file.name);
    if (prev === undefined) {
      reasons.push(`file ${file.name} added`);
      continue;
    }
    if (prev.content === file.content && prev.mode === file.mode) continue;
    if (!RUNTIME_FILES.has(file.name) || prev.mode !== file.mode) {
      reasons.push(`file ${file.name} changed`);
    } else if (!fitsPayload(file.content)) {
      reasons.push(`file ${file.name} changed and is too large for a runtime update`);
    } else if (file.name === LEAF_FILE) {
      tlsOps.push({ kind: 'set-leaf', path: runDirPath(runDir, LEAF_FILE), pem: file.content });
    } else if (file.name === ROUTE_SPLITS_MAP_FILE) {
      // Split weights changed: new cut points at runtime (the routes themselves are in the frontends).
      const entries = changedCuts(prev.content, file.content);
      if (entries === undefined) reasons.push(`file ${file.name} changed its keys`);
      else if (entries.length > 0) tlsOps.push({ kind: 'set-split-weights', path: runDirPath(runDir, file.name), entries });
    } else if (file.name === INTENTIONS_EPOCH_MAP_FILE) {
      // Intentions changed: a new epoch, so HAProxy asks the agent again (the agent already has them).
      const next = epochMapKeys(file.content).current;
      if (next === undefined) reasons.push(`file ${file.name} changed without a current epoch`);
      else tlsOps.push({ kind: 'set-intentions-epoch', path: runDirPath(runDir, file.name), epoch: next, previous: epochMapKeys(prev.content).valid });
    } else {
      // Roots change through a hitless reload, never at runtime: on 2.6.12 a runtime
      // `commit ssl ca-file` leaves the bind's leaf "Unused", so every later leaf rotation
      // reports success and changes nothing (measured, see test/unit/runtime.test.ts); and
      // dropping roots at runtime right after a leaf commit crashed 2.6.12 (FACTS §2).
      const kept = new Set(pemCertificates(file.content));
      const dropped = pemCertificates(prev.content).filter((cert) => !kept.has(cert)).length;
      const added = pemCertificates(file.content).length - (pemCertificates(prev.content).length - dropped);
      if (dropped > 0 || added > 0) reasons.push(`CA roots changed (${added} added, ${dropped} removed)`);
    }
  }
  for (const file of before) if (!now.has(file.name)) reasons.push(`file ${file.name} removed`);
}

/**
 * Server ops of one backend whose other fields are unchanged. Dynamic servers resolve no names
 * (init-addr none), so a new or moved server with a host name instead of an IP needs a reload.
 */
function diffServers(before: Backend, after: Backend, reasons: string[]): RuntimeOp[] {
  const old = byName(before.servers);
  const now = byName(after.servers);
  const adds: RuntimeOp[] = [];
  const moves: RuntimeOp[] = [];
  const weights: RuntimeOp[] = [];
  const removes: RuntimeOp[] = [];
  const needsIp = (server: Server, what: string): boolean => {
    if (isIP(server.address) !== 0) return false;
    reasons.push(`backend ${after.name} server ${server.name} ${what} with host name ${server.address} (not resolvable at runtime)`);
    return true;
  };
  for (const server of after.servers) {
    const prev = old.get(server.name);
    if (prev === undefined) {
      if (!needsIp(server, 'added')) adds.push({ kind: 'add-server', backend: after.name, server, spec: serverSpec(server, after) });
      continue;
    }
    if (prev.address !== server.address || prev.port !== server.port) {
      if (!needsIp(server, 'moved')) {
        moves.push({ kind: 'set-address', backend: after.name, server: server.name, address: server.address, port: server.port });
      }
    }
    if (prev.weight !== server.weight) weights.push({ kind: 'set-weight', backend: after.name, server: server.name, weight: server.weight });
  }
  for (const server of before.servers) {
    if (!now.has(server.name)) removes.push({ kind: 'remove-server', backend: after.name, server: server.name });
  }
  return [...adds, ...moves, ...weights, ...removes];
}

export function plan(applied: HaproxyModel, desired: HaproxyModel): Plan {
  const reasons: string[] = [];
  if (!isDeepStrictEqual(applied.global, desired.global)) reasons.push('global settings changed');
  diffNamed('frontend', applied.frontends, desired.frontends, (a, b) => isDeepStrictEqual(withoutAccessLog(a), withoutAccessLog(b)), reasons);
  diffAccessLogs(applied.frontends, desired.frontends, reasons);
  diffPermissions(applied.frontends, desired.frontends, reasons);
  diffNamed('backend', applied.backends, desired.backends, (a, b) => isDeepStrictEqual(withoutServers(a), withoutServers(b)), reasons);

  const tlsOps: RuntimeOp[] = [];
  diffFiles(applied.files, desired.files, desired.global.runDir, reasons, tlsOps);

  const serverOps: RuntimeOp[] = [];
  const old = byName(applied.backends);
  for (const backend of desired.backends) {
    const prev = old.get(backend.name);
    if (prev === undefined || !isDeepStrictEqual(withoutServers(prev), withoutServers(backend))) continue;
    serverOps.push(...diffServers(prev, backend, reasons));
  }

  const adds = serverOps.filter((op) => op.kind === 'add-server').length;
  if (adds > MAX_RUNTIME_SERVER_ADDS) reasons.push(`${adds} servers to add (more than ${MAX_RUNTIME_SERVER_ADDS}: a reload is faster than runtime adds)`);
  if (reasons.length > 0) return { kind: 'reload', reasons };
  const ops = [...tlsOps, ...serverOps];
  return ops.length === 0 ? { kind: 'none' } : { kind: 'runtime', ops };
}

/**
 * What of `desired` can go live without a reload, on top of `applied`: the servers of every
 * backend that is otherwise unchanged, the leaf and the intentions epoch. Everything structural
 * stays as applied. When a reload cannot be done (a full disk, a configuration HAProxy refuses),
 * the reconciler applies this so endpoint, leaf and intentions changes keep flowing. PURE.
 */
export function runtimeSubset(applied: HaproxyModel, desired: HaproxyModel): HaproxyModel {
  const wanted = byName(desired.backends);
  const backends = applied.backends.map((backend) => {
    const next = wanted.get(backend.name);
    if (next === undefined || !isDeepStrictEqual(withoutServers(backend), withoutServers(next))) return backend;
    // Host names cannot be resolved at runtime: such servers keep their applied state.
    const old = byName(backend.servers);
    const servers = next.servers.flatMap((server) => {
      if (isIP(server.address) !== 0) return [server];
      const prev = old.get(server.name);
      return prev === undefined ? [] : [prev];
    });
    return { ...next, servers };
  });
  const desiredFiles = byName(desired.files);
  const files = applied.files.map((file) => {
    const next = desiredFiles.get(file.name);
    if (next === undefined || next.mode !== file.mode) return file;
    if (file.name === ROUTE_SPLITS_MAP_FILE) return changedCuts(file.content, next.content) === undefined ? file : next;
    return file.name === LEAF_FILE || file.name === INTENTIONS_EPOCH_MAP_FILE ? next : file;
  });
  return { ...applied, backends, files };
}

/** Whether two models hold the same files (names, bytes and modes, in order). PURE. */
export function sameModelFiles(a: HaproxyModel, b: HaproxyModel): boolean {
  if (a.files.length !== b.files.length) return false;
  return a.files.every((f, i) => {
    const g = b.files[i];
    return g !== undefined && f.name === g.name && f.content === g.content && f.mode === g.mode;
  });
}
