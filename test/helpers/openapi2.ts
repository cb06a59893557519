/**
 * A small Swagger 2.0 request validator for tests: does a request the driver sends conform to the
 * Data Plane API specification (path, method, path and query parameters, body)? It checks the
 * subset of JSON schema the Data Plane API specification uses, and nothing it returns is trusted
 * beyond tests.
 */
import { readFileSync } from 'node:fs';

/** What parameters and schemas share. */
interface Constraints {
  type?: string;
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
}

export interface Schema extends Constraints {
  $ref?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  allOf?: Schema[];
  'x-nullable'?: boolean;
}

export interface Parameter extends Constraints {
  name: string;
  in: 'path' | 'query' | 'header' | 'body' | 'formData';
  required?: boolean;
  schema?: Schema;
}

type ParameterOrRef = Parameter | { $ref: string };

export interface Operation {
  operationId?: string;
  consumes?: string[];
  parameters?: ParameterOrRef[];
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch'] as const;
type Method = (typeof METHODS)[number];
export type PathItem = { parameters?: ParameterOrRef[] } & { [M in Method]?: Operation };

export interface Spec {
  swagger: '2.0';
  basePath?: string;
  consumes?: string[];
  paths: Record<string, PathItem>;
  definitions?: Record<string, Schema>;
  parameters?: Record<string, Parameter>;
}

export interface RequestToCheck {
  method: string;
  /** Full path including basePath, e.g. /v2/services/haproxy/runtime/servers/x. */
  path: string;
  query: Record<string, string>;
  /** Parsed JSON, or the text of a text/plain body. */
  body?: unknown;
  contentType?: string;
}

export interface Violation {
  where: string;
  message: string;
}

/** Bounds $ref/allOf recursion: a self-referencing definition must not loop. */
const MAX_SCHEMA_DEPTH = 64;

interface Route {
  template: string;
  /** A parameter name for a `{name}` segment, undefined for a literal one. */
  segments: { literal: string; param: string | undefined }[];
  item: PathItem;
}

/** Per-spec routes and compiled patterns; both are bounded by the spec's size. */
interface SpecIndex {
  routes: Route[];
  patterns: Map<string, RegExp | null>;
}

const indexes = new WeakMap<Spec, SpecIndex>();

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Own properties only: a key like `constructor` must not find Object.prototype's. */
function own<T>(record: Record<string, T> | undefined, key: string): T | undefined {
  return record !== undefined && Object.hasOwn(record, key) ? record[key] : undefined;
}

export function loadSpec(file: string): Spec {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isRecord(parsed) || parsed['swagger'] !== '2.0' || !isRecord(parsed['paths'])) {
    throw new Error(`${file} is not a Swagger 2.0 specification (no "swagger": "2.0" with "paths")`);
  }
  return parsed as unknown as Spec;
}

function indexOf(spec: Spec): SpecIndex {
  let index = indexes.get(spec);
  if (index === undefined) {
    const routes = Object.entries(spec.paths).map(([template, item]) => ({
      template,
      item,
      segments: template
        .split('/')
        .slice(1)
        .map((segment) => {
          const param = /^\{([^}]+)\}$/.exec(segment)?.[1];
          return { literal: segment, param };
        }),
    }));
    index = { routes, patterns: new Map() };
    indexes.set(spec, index);
  }
  return index;
}

function findRoute(spec: Spec, path: string): { route: Route; values: Map<string, string> } | undefined {
  const base = spec.basePath === undefined || spec.basePath === '/' ? '' : spec.basePath;
  if (!path.startsWith(`${base}/`)) return undefined;
  const segments = path.slice(base.length).split('/').slice(1);
  let best: { route: Route; values: Map<string, string>; rank: string } | undefined;
  for (const route of indexOf(spec).routes) {
    if (route.segments.length !== segments.length) continue;
    const values = new Map<string, string>();
    // Rank: '0' for a literal segment, '1' for a templated one; the smallest string wins, so a
    // literal segment beats a template at the first position where two matching routes differ.
    let rank = '';
    const matches = route.segments.every((segment, i) => {
      const actual = segments[i] ?? '';
      if (segment.param === undefined) {
        rank += '0';
        return segment.literal === actual;
      }
      rank += '1';
      values.set(segment.param, actual);
      return actual !== '';
    });
    if (matches && (best === undefined || rank < best.rank)) best = { route, values, rank };
  }
  return best;
}

function lookupOperation(spec: Spec, method: string, path: string): { route: Route; values: Map<string, string>; operation: Operation | undefined } | undefined {
  const found = findRoute(spec, path);
  if (found === undefined) return undefined;
  const name = method.toLowerCase();
  const operation = (METHODS as readonly string[]).includes(name) ? found.route.item[name as Method] : undefined;
  return { ...found, operation };
}

export function operationId(spec: Spec, method: string, path: string): string | undefined {
  return lookupOperation(spec, method, path)?.operation?.operationId;
}

function regExp(spec: Spec, pattern: string): RegExp | null {
  const patterns = indexOf(spec).patterns;
  if (!patterns.has(pattern)) {
    let compiled: RegExp | null = null;
    try {
      compiled = new RegExp(pattern);
    } catch {
      compiled = null; // reported as a violation where it is used
    }
    patterns.set(pattern, compiled);
  }
  return patterns.get(pattern) ?? null;
}

function typeMatches(type: string, value: unknown): boolean {
  switch (type) {
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'string':
    case 'boolean':
      return typeof value === type;
    case 'object':
      return isRecord(value);
    case 'array':
      return Array.isArray(value);
    default:
      return true; // `file` and anything else this subset does not model
  }
}

function kindOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
}

/** enum, pattern and minimum/maximum, shared by parameters and body schemas. */
function checkConstraints(spec: Spec, schema: Constraints, value: unknown, where: string, out: Violation[]): void {
  if (schema.enum !== undefined && !schema.enum.some((allowed) => allowed === value)) {
    out.push({ where, message: `${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}` });
  }
  if (schema.pattern !== undefined && typeof value === 'string') {
    const re = regExp(spec, schema.pattern);
    if (re === null) out.push({ where, message: `the specification's pattern ${schema.pattern} does not compile` });
    else if (!re.test(value)) out.push({ where, message: `${JSON.stringify(value)} does not match ${schema.pattern}` });
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) out.push({ where, message: `${value} is below the minimum ${schema.minimum}` });
    if (schema.maximum !== undefined && value > schema.maximum) out.push({ where, message: `${value} is above the maximum ${schema.maximum}` });
  }
}

function pointer(where: string, key: string | number): string {
  return `${where}/${String(key).replaceAll('~', '~0').replaceAll('/', '~1')}`;
}

// readOnly is deliberately not checked: the Data Plane API's own runtime_add_server schema marks
// `address` and `port` readOnly, yet adding a server needs them.
function checkSchema(spec: Spec, schema: Schema, value: unknown, where: string, out: Violation[], depth = 0): void {
  if (depth > MAX_SCHEMA_DEPTH) return;
  if (value === null && schema['x-nullable'] === true) return;
  if (schema.$ref !== undefined) {
    const name = schema.$ref.startsWith('#/definitions/') ? schema.$ref.slice('#/definitions/'.length) : undefined;
    const target = name === undefined ? undefined : own(spec.definitions, name);
    if (target === undefined) out.push({ where, message: `unresolvable $ref ${schema.$ref}` });
    else checkSchema(spec, target, value, where, out, depth + 1);
    return; // Swagger 2.0 ignores the siblings of a $ref
  }
  for (const part of schema.allOf ?? []) checkSchema(spec, part, value, where, out, depth + 1);
  if (value === null) {
    if (schema.type !== undefined) out.push({ where, message: 'null is not allowed here (no x-nullable: true)' });
    return;
  }
  if (schema.type !== undefined && !typeMatches(schema.type, value)) {
    out.push({ where, message: `expected ${schema.type}, got ${kindOf(value)}` });
    return;
  }
  checkConstraints(spec, schema, value, where, out);
  if (isRecord(value)) {
    for (const name of schema.required ?? []) {
      if (!Object.hasOwn(value, name)) out.push({ where: pointer(where, name), message: 'required property is missing' });
    }
    for (const [key, property] of Object.entries(value)) {
      const declared = own(schema.properties, key);
      if (declared !== undefined) checkSchema(spec, declared, property, pointer(where, key), out, depth + 1);
      // go-swagger (the API's server) merges allOf members before it applies additionalProperties:
      // a property declared by a member is known (and checked by that member above).
      else if (schema.additionalProperties === false && !declaredByAllOf(spec, schema, key, depth)) out.push({ where: pointer(where, key), message: 'unknown property (additionalProperties: false)' });
      else if (isRecord(schema.additionalProperties)) checkSchema(spec, schema.additionalProperties, property, pointer(where, key), out, depth + 1);
    }
  }
  if (Array.isArray(value) && schema.items !== undefined) {
    const list: unknown[] = value;
    for (const [i, item] of list.entries()) checkSchema(spec, schema.items, item, pointer(where, i), out, depth + 1);
  }
}

/** Whether a member of `schema.allOf` (refs resolved, nested allOf followed) declares `key`. */
function declaredByAllOf(spec: Spec, schema: Schema, key: string, depth: number): boolean {
  if (depth > 64) return false;
  for (const part of schema.allOf ?? []) {
    const name = part.$ref?.startsWith('#/definitions/') ? part.$ref.slice('#/definitions/'.length) : undefined;
    const target = name === undefined ? part : own(spec.definitions, name);
    if (target === undefined) continue;
    if (own(target.properties, key) !== undefined || declaredByAllOf(spec, target, key, depth + 1)) return true;
  }
  return false;
}

/** A path or query value arrives as text; convert it to the parameter's type before checking. */
function checkSimpleParameter(spec: Spec, parameter: Parameter, text: string, where: string, out: Violation[]): void {
  let value: unknown = text;
  if (parameter.type === 'integer' || parameter.type === 'number') {
    const ok = parameter.type === 'integer' ? /^-?\d+$/.test(text) : text.trim() !== '' && Number.isFinite(Number(text));
    if (!ok) {
      out.push({ where, message: `${JSON.stringify(text)} is not ${parameter.type === 'integer' ? 'an integer' : 'a number'}` });
      return;
    }
    value = Number(text);
  } else if (parameter.type === 'boolean') {
    if (text !== 'true' && text !== 'false') {
      out.push({ where, message: `${JSON.stringify(text)} is not "true" or "false"` });
      return;
    }
    value = text === 'true';
  }
  checkConstraints(spec, parameter, value, where, out);
}

function resolveParameters(spec: Spec, list: ParameterOrRef[], out: Violation[]): Parameter[] {
  const resolved: Parameter[] = [];
  for (const entry of list) {
    if (!('$ref' in entry)) {
      resolved.push(entry);
      continue;
    }
    const name = entry.$ref.startsWith('#/parameters/') ? entry.$ref.slice('#/parameters/'.length) : undefined;
    const target = name === undefined ? undefined : own(spec.parameters, name);
    if (target === undefined) out.push({ where: 'spec', message: `unresolvable parameter $ref ${entry.$ref}` });
    else resolved.push(target);
  }
  return resolved;
}

export function validateRequest(spec: Spec, req: RequestToCheck): Violation[] {
  const out: Violation[] = [];
  const found = lookupOperation(spec, req.method, req.path);
  if (found === undefined) return [{ where: 'path', message: `no path in the specification matches ${req.path}` }];
  const { route, values, operation } = found;
  if (operation === undefined) return [{ where: 'method', message: `${req.method.toUpperCase()} is not an operation of ${route.template}` }];

  // An operation's parameter overrides a path-level one with the same name and location.
  const byKey = new Map<string, Parameter>();
  for (const parameter of [...resolveParameters(spec, route.item.parameters ?? [], out), ...resolveParameters(spec, operation.parameters ?? [], out)]) {
    byKey.set(`${parameter.in}:${parameter.name}`, parameter);
  }
  const parameters = [...byKey.values()];

  for (const parameter of parameters.filter((p) => p.in === 'path')) {
    const raw = values.get(parameter.name);
    const where = `path/${parameter.name}`;
    if (raw === undefined) {
      out.push({ where, message: `path parameter ${parameter.name} is not a segment of ${route.template}` });
      continue;
    }
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      out.push({ where, message: `${JSON.stringify(raw)} is not valid percent-encoding` });
      continue;
    }
    checkSimpleParameter(spec, parameter, decoded, where, out);
  }

  const query = parameters.filter((p) => p.in === 'query');
  for (const name of Object.keys(req.query)) {
    if (!query.some((p) => p.name === name)) out.push({ where: `query/${name}`, message: `unknown query parameter ${name}` });
  }
  for (const parameter of query) {
    const value = own(req.query, parameter.name);
    const where = `query/${parameter.name}`;
    if (value === undefined) {
      if (parameter.required === true) out.push({ where, message: `missing required query parameter ${parameter.name}` });
    } else checkSimpleParameter(spec, parameter, value, where, out);
  }

  const bodyParameter = parameters.find((p) => p.in === 'body');
  const takesForm = parameters.some((p) => p.in === 'formData');
  if (req.body === undefined) {
    if (bodyParameter?.required === true) out.push({ where: 'body', message: `missing required body (${bodyParameter.name})` });
    return out;
  }
  if (bodyParameter === undefined && !takesForm) {
    out.push({ where: 'body', message: `${route.template} ${req.method.toUpperCase()} declares no body` });
    return out;
  }
  const consumes = operation.consumes ?? spec.consumes;
  const mediaType = req.contentType?.split(';')[0]?.trim().toLowerCase();
  if (mediaType !== undefined && consumes !== undefined && !consumes.includes(mediaType)) {
    out.push({ where: 'contentType', message: `${mediaType} is not one of ${JSON.stringify(consumes)}` });
  }
  // A multipart form body is not modelled; its presence is all that is checked.
  if (bodyParameter?.schema !== undefined) checkSchema(spec, bodyParameter.schema, req.body, 'body', out);
  return out;
}
