/**
 * The Node built-ins whose ESM import costs memory, read with `process.getBuiltinModule` instead
 * (import them from here; `npm run lint:deps` refuses a value import of `node:http`, `node:https` or
 * `node:util` elsewhere in src/). An ESM import of a built-in builds a namespace of all its exports,
 * which runs their lazy getters: on Node 24, `node:http`'s load undici (and with it Node's TLS,
 * HTTP/2 and assert modules), `node:util`'s some forty more modules. Measured on Node 24.22 with
 * those three modules: 53.3 MiB RSS instead of 61.0 (Node 20: the same either way).
 */
import type * as Http from 'node:http';
import type * as Https from 'node:https';

export const http: typeof Http = process.getBuiltinModule('node:http');

/** `node:https`, loaded on first use: a daemon whose agent speaks plain HTTP (the usual local agent) never loads Node's TLS client. */
export function https(): typeof Https {
  return process.getBuiltinModule('node:https');
}

export const { isDeepStrictEqual } = process.getBuiltinModule('node:util');
