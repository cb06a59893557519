/**
 * An intention's `Permissions` as Consul 1.16.2 sends them (structs.IntentionPermission) → our
 * typed permissions (domain/intentions.ts). PURE.
 *
 * One intention at a time: a permission we cannot enforce as Envoy would (a regex RE2 refuses, a
 * JWT requirement, a header matcher that is not an HTTP token, an unknown field that would change
 * what matches) makes THAT intention unenforceable (it denies, with the reason naming the value),
 * never the others. Matcher precedence is rbac.go's convertPermission: PathExact, then PathPrefix,
 * then PathRegex; per header Exact, then Regex, then Prefix, then Suffix, then Present (a header
 * with none of them is skipped, as Consul does).
 */
import { z } from 'zod';
import type { Intention, IntentionPermission, PermissionMatch } from '../domain/intentions.js';
import { re2Problem } from '../domain/regex.js';
import { HTTP_TOKEN, type HeaderMatch } from '../domain/routes.js';
import type { intentionJsonSchema } from './schemas.js';

const text = z
  .string()
  .nullish()
  .transform((v) => v ?? '');
const flag = z
  .boolean()
  .nullish()
  .transform((v) => v ?? false);

const headerSchema = z.object({ Name: z.string(), Present: flag, Exact: text, Prefix: text, Suffix: text, Regex: text, Invert: flag }).strict();
const httpSchema = z
  .object({
    PathExact: text,
    PathPrefix: text,
    PathRegex: text,
    Header: z
      .array(headerSchema)
      .nullish()
      .transform((v) => v ?? []),
    Methods: z
      .array(z.string())
      .nullish()
      .transform((v) => v ?? []),
  })
  .strict();
const permissionSchema = z.object({ Action: z.string(), HTTP: httpSchema.nullish(), JWT: z.unknown().nullish() }).strict();

export type PermissionsResult = { permissions: IntentionPermission[]; problem?: undefined } | { permissions: IntentionPermission[]; problem: string };

const MAX_SHOWN = 120;
function shown(value: string): string {
  return JSON.stringify(value.length > MAX_SHOWN ? `${value.slice(0, MAX_SHOWN)}…` : value);
}

class PermissionProblem extends Error {}

function checkedRegex(what: string, pattern: string): string {
  const problem = re2Problem(pattern);
  if (problem !== undefined) throw new PermissionProblem(`${what} ${shown(pattern)}: ${problem}`);
  return pattern;
}

function headerOf(raw: z.infer<typeof headerSchema>, at: string): HeaderMatch | undefined {
  const name = raw.Name.toLowerCase();
  if (!HTTP_TOKEN.test(name)) throw new PermissionProblem(`${at} header name ${shown(raw.Name)} is not an HTTP token (pseudo-headers are not supported)`);
  const what = `${at} header ${shown(name)}`;
  const invert = raw.Invert;
  if (raw.Exact !== '') return { name, match: { kind: 'exact', value: raw.Exact }, invert };
  if (raw.Regex !== '') return { name, match: { kind: 'regex', value: checkedRegex(`${what} regex`, raw.Regex) }, invert };
  if (raw.Prefix !== '') return { name, match: { kind: 'prefix', value: raw.Prefix }, invert };
  if (raw.Suffix !== '') return { name, match: { kind: 'suffix', value: raw.Suffix }, invert };
  if (raw.Present) return { name, match: { kind: 'present' }, invert };
  return undefined;
}

function httpOf(raw: z.infer<typeof httpSchema>, at: string): PermissionMatch {
  let path: PermissionMatch['path'];
  if (raw.PathExact !== '') path = { kind: 'exact', value: raw.PathExact };
  else if (raw.PathPrefix !== '') path = { kind: 'prefix', value: raw.PathPrefix };
  else if (raw.PathRegex !== '') path = { kind: 'regex', value: checkedRegex(`${at} PathRegex`, raw.PathRegex) };
  for (const value of [raw.PathExact, raw.PathPrefix, raw.PathRegex]) {
    if (/[\0\r\n]/.test(value)) throw new PermissionProblem(`${at} path ${shown(value)} holds CR, LF or NUL, which no request path can`);
  }
  const headers: HeaderMatch[] = [];
  for (const header of raw.Header) {
    const match = headerOf(header, at);
    if (match === undefined) continue;
    if (match.match.kind !== 'present' && /[\0\r\n]/.test(match.match.value)) throw new PermissionProblem(`${at} header ${shown(match.name)} value ${shown(match.match.value)} holds CR, LF or NUL`);
    headers.push(match);
  }
  const methods = raw.Methods.map((m) => m.toUpperCase());
  for (const method of methods) {
    if (!/^[!#%&'_`~0-9A-Za-z-]+$/.test(method)) throw new PermissionProblem(`${at} method ${shown(method)} is not an HTTP token without $ * + . ^ | (Envoy matches the methods as one regex)`);
  }
  return { ...(path !== undefined && { path }), headers, methods };
}

/** `raw` is the intention's Permissions array (null/undefined: an L4 intention). */
export function parsePermissions(raw: readonly unknown[]): PermissionsResult {
  const permissions: IntentionPermission[] = [];
  try {
    raw.forEach((item, index) => {
      const at = `permission ${index + 1}`;
      const parsed = permissionSchema.safeParse(item);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new PermissionProblem(`${at} is not a Consul 1.16 permission: ${issue === undefined ? 'invalid' : `${issue.path.join('.') || '(root)'}: ${issue.message}`}`);
      }
      const p = parsed.data;
      const action = p.Action.toLowerCase();
      if (action !== 'allow' && action !== 'deny') throw new PermissionProblem(`${at} Action ${shown(p.Action)} is neither allow nor deny`);
      if (p.JWT !== undefined && p.JWT !== null) throw new PermissionProblem(`${at} requires a JWT, which haproxy-connect does not verify`);
      permissions.push({ action, ...(p.HTTP !== undefined && p.HTTP !== null && { http: httpOf(p.HTTP, at) }) });
    });
  } catch (err) {
    if (err instanceof PermissionProblem) return { permissions: [], problem: err.message };
    throw err;
  }
  return { permissions };
}

/** One intention of the match endpoint's answer: a permission it cannot enforce makes it unenforceable, never the others. */
export function intentionFromJson(i: z.infer<typeof intentionJsonSchema>): Intention {
  const parsed = parsePermissions(i.Permissions);
  const problem = i.JWT !== undefined && i.JWT !== null ? 'it requires a JWT, which haproxy-connect does not verify' : parsed.problem;
  return {
    sourceName: i.SourceName,
    sourceNamespace: i.SourceNS,
    sourcePartition: i.SourcePartition,
    sourcePeer: i.SourcePeer,
    destinationName: i.DestinationName,
    destinationNamespace: i.DestinationNS,
    destinationPartition: i.DestinationPartition,
    action: i.Action,
    permissions: parsed.permissions,
    precedence: i.Precedence,
    ...(problem !== undefined && { unenforceable: problem }),
  };
}
