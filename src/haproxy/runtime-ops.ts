/**
 * Runtime operations (what the planner decides) → exact runtime API commands, and how to tell a
 * success answer from a failure. PURE: no sockets here (src/driver/runtime-apply.ts sends the commands).
 *
 * Answers measured on HAProxy 2.6.12 (interactive mode, text before the `> ` prompt):
 *   add server      → "New server registered." | "Already exists a server with the same name in
 *                     backend." | "No such backend." | "unable to stat SSL certificate '<path>'..."
 *   enable/disable server, set weight → "" (empty) | "No such server."
 *   del server      → "Server deleted." | "Only servers in maintenance mode can be deleted." |
 *                     "Server still has connections attached to it, cannot remove it." | "No such server."
 *   set server addr → "IP changed from 'a' to 'b'[, port changed from 'p' to 'q'] by 'stats socket
 *                     command'" | "no need to change the addr, port changed from ..." |
 *                     "Invalid addr '<x>' by 'stats socket command'"; 3.0.11 (measured) drops the
 *                     "no need to change ..." parts and answers "nothing changed" when neither changes
 *   set weight > 256 → "Absolute weight can only be between 0 and 256 inclusive."
 *   set ssl cert    → "Transaction created for certificate <path>!" | "Transaction updated for
 *                     certificate <path>!" | "Can't replace a certificate which is not referenced
 *                     by the configuration!\nCan't update <path>!"
 *   set ssl ca-file → "transaction created for CA <path>!" (lower case, unlike set ssl cert)
 *   commit ssl ...  → "Committing <path>...\nSuccess!" | "No ongoing transaction! !\nCan't commit <path>!"
 *   show servers state <unknown> → "Can't find backend."
 *   add map / set map / del map → "" (empty) | "Unknown map identifier. Please use #<id> or <file>." |
 *                     "Key not found." (del/set)
 * So success is recognised by its expected text per command; anything else is a failure.
 */
import { HaproxyConnectError } from '../errors.js';
import type { Server } from './model.js';
import { HAPROXY_NAME_PATTERN, INTENTIONS_EPOCH_CURRENT_KEY, isPlainAbsolutePath } from '../domain/haproxy-names.js';
import { formatAddress } from './server-line.js';

/**
 * The CLI takes a whole command with its payload in one buffer of `tune.bufsize` (16,384 bytes
 * by default): a larger PEM cannot be sent at runtime, and the planner falls back to a reload.
 */
export const MAX_PAYLOAD_BYTES = 15_000;

export type RuntimeOp =
  /** `spec` is serverSpec() of server-line.ts: `<name> <addr:port> <options>`. */
  | { kind: 'add-server'; backend: string; server: Server; spec: string }
  | { kind: 'remove-server'; backend: string; server: string }
  | { kind: 'set-weight'; backend: string; server: string; weight: number }
  | { kind: 'set-address'; backend: string; server: string; address: string; port: number }
  /** `path` is absolute: HAProxy keys certificates loaded through crt-base by absolute path. */
  | { kind: 'set-leaf'; path: string; pem: string }
  /** Replaces the CA bundle with `pem`, which contains every certificate of the old one. */
  /**
   * Makes `epoch` the current intentions epoch in the map at `path` (absolute): valid first, then
   * current, then the old epochs invalid, so a verdict is never checked against a half-written map.
   */
  | { kind: 'set-intentions-epoch'; path: string; epoch: string; previous: string[] }
  /** New cut points of split routes in the map at `path` (absolute): `set map` per changed key. */
  | { kind: 'set-split-weights'; path: string; entries: ReadonlyArray<readonly [string, number]> };

/** What a successful answer looks like: empty, or matching a pattern. */
export type Expect = { kind: 'empty' } | { kind: 'match'; pattern: RegExp };

export interface RuntimeCommand {
  /** The command line, without newline or payload marker. */
  line: string;
  /** PEM payload without empty lines; sent after ` <<` and ended by an empty line. */
  payload: string | undefined;
  expect: Expect;
}

/** `del server` refused because connections (active or idle, on any thread) still use the server. */
export const STILL_HAS_CONNECTIONS = /still has connections attached/i;

const EMPTY: Expect = { kind: 'empty' };
const ADDED: Expect = { kind: 'match', pattern: /^New server registered\.$/ };
const DELETED: Expect = { kind: 'match', pattern: /^Server deleted\.$/ };
/** 3.0.11 answers `nothing changed` where 2.6.12 said `no need to change the addr, no need to change the port` (measured). */
const ADDR_CHANGED: Expect = { kind: 'match', pattern: /(changed from|no need to change|^nothing changed$)/ };
const TRANSACTION: Expect = { kind: 'match', pattern: /^Transaction (created|updated) for /i };
const COMMITTED: Expect = { kind: 'match', pattern: /Success!$/ };
const SAFE_ADDRESS = /^[0-9A-Fa-f:.]+$/;
/** Epochs are short hashes (translate/spoe.ts); anything else would be a second map argument. */
const SAFE_MAP_KEY = /^[A-Za-z0-9_.-]+$/;
/** Split keys: `<frontend>/<route>/<leg>` (names.ts ROUTE_SPLITS_MAP_FILE). */
const SAFE_SPLIT_KEY = /^[A-Za-z0-9_.:-]+\/[0-9]+\/[0-9]+$/;

function refuse(what: string): never {
  throw new HaproxyConnectError('HAPROXY_CLI', `Refusing to build a runtime API command: ${what}`);
}

function target(backend: string, server: string): string {
  for (const name of [backend, server]) {
    if (!HAPROXY_NAME_PATTERN.test(name)) refuse(`name ${JSON.stringify(name)} must match ${HAPROXY_NAME_PATTERN}`);
  }
  return `${backend}/${server}`;
}

function checkPath(path: string): string {
  if (path === '/' || !isPlainAbsolutePath(path)) refuse(`path ${JSON.stringify(path)} must be absolute and plain`);
  return path;
}

/**
 * A PEM as a CLI payload: an empty line ends the payload, so blank lines and CRs are removed
 * (management.txt "set ssl cert"). Refuses payloads HAProxy could not take in one buffer.
 */
export function pemPayload(pem: string): string {
  const payload = pem
    .split('\n')
    .map((line) => line.replace(/\r$/, ''))
    .filter((line) => line.trim() !== '')
    .join('\n');
  if (payload === '') refuse('empty PEM payload');
  if (Buffer.byteLength(payload) > MAX_PAYLOAD_BYTES) {
    refuse(`PEM payload of ${Buffer.byteLength(payload)} bytes exceeds ${MAX_PAYLOAD_BYTES} bytes`);
  }
  return payload;
}

/** Whether a PEM fits in one runtime API command (the planner asks before choosing runtime). */
export function fitsPayload(pem: string): boolean {
  return Buffer.byteLength(pem) <= MAX_PAYLOAD_BYTES;
}

function command(line: string, expect: Expect, payload?: string): RuntimeCommand {
  if (/[\r\n]/.test(line)) refuse(`command ${JSON.stringify(line)} contains a newline`);
  return { line, payload, expect };
}

/** The commands of one op, run in order; the op fails at the first unexpected answer. */
export function opCommands(op: RuntimeOp): RuntimeCommand[] {
  switch (op.kind) {
    case 'add-server': {
      const name = target(op.backend, op.server.name);
      if (!op.spec.startsWith(`${op.server.name} `)) refuse(`spec ${JSON.stringify(op.spec)} is not for server ${op.server.name}`);
      if (/(^|\s)(enabled|disabled)(\s|$)/.test(op.spec)) refuse(`spec of ${name} carries enabled/disabled (FACTS §2)`);
      // A new server starts in maintenance; `enable server` puts it into load balancing, and
      // `enable health` starts its checks (passive health): without it they never run.
      const checked = /(^|\s)check(\s|$)/.test(op.spec);
      return [command(`add server ${op.backend}/${op.spec}`, ADDED), command(`enable server ${name}`, EMPTY), ...(checked ? [command(`enable health ${name}`, EMPTY)] : [])];
    }
    case 'remove-server': {
      const name = target(op.backend, op.server);
      // Maintenance first: `del server` refuses anything else. Idle pooled connections may outlive it
      // (measured on 2.6.12: from ~1 ms up to the pool purge delay), so deletion can be pending.
      return [command(`disable server ${name}`, EMPTY), command(`del server ${name}`, DELETED)];
    }
    case 'set-weight': {
      if (!Number.isInteger(op.weight) || op.weight < 0 || op.weight > 256) refuse(`weight ${op.weight} outside 0..256`);
      return [command(`set weight ${target(op.backend, op.server)} ${op.weight}`, EMPTY)];
    }
    case 'set-address': {
      const name = target(op.backend, op.server);
      if (!SAFE_ADDRESS.test(op.address)) refuse(`address ${JSON.stringify(op.address)} is not an IP literal`);
      if (!Number.isInteger(op.port) || op.port < 1 || op.port > 65_535) refuse(`port ${op.port} outside 1..65535`);
      // Through maintenance: it closes idle pooled connections to the old address, which
      // `http-reuse always` would otherwise keep reusing.
      return [command(`disable server ${name}`, EMPTY), command(`set server ${name} addr ${op.address} port ${op.port}`, ADDR_CHANGED), command(`enable server ${name}`, EMPTY)];
    }
    case 'set-leaf': {
      const path = checkPath(op.path);
      return [command(`set ssl cert ${path}`, TRANSACTION, pemPayload(op.pem)), command(`commit ssl cert ${path}`, COMMITTED)];
    }
    case 'set-intentions-epoch': {
      const path = checkPath(op.path);
      for (const key of [op.epoch, ...op.previous]) {
        if (!SAFE_MAP_KEY.test(key) || key === INTENTIONS_EPOCH_CURRENT_KEY) refuse(`map key ${JSON.stringify(key)} must match ${SAFE_MAP_KEY}`);
      }
      return [
        command(`add map ${path} ${op.epoch} 1`, EMPTY),
        command(`set map ${path} ${INTENTIONS_EPOCH_CURRENT_KEY} ${op.epoch}`, EMPTY),
        ...op.previous.filter((key) => key !== op.epoch).map((key) => command(`del map ${path} ${key}`, EMPTY)),
      ];
    }
    case 'set-split-weights': {
      const path = checkPath(op.path);
      return op.entries.map(([key, cut]) => {
        if (!SAFE_SPLIT_KEY.test(key)) refuse(`map key ${JSON.stringify(key)} must match ${SAFE_SPLIT_KEY}`);
        if (!Number.isInteger(cut) || cut < 0) refuse(`split cut ${cut} is not a whole number`);
        return command(`set map ${path} ${key} ${cut}`, EMPTY);
      });
    }
  }
}

/** The bytes written for a command: the line, or the line with its payload and the empty line. */
export function commandText(cmd: RuntimeCommand): string {
  return cmd.payload === undefined ? `${cmd.line}\n` : `${cmd.line} <<\n${cmd.payload}\n\n`;
}

export function isExpected(cmd: RuntimeCommand, answer: string): boolean {
  return cmd.expect.kind === 'empty' ? answer === '' : cmd.expect.pattern.test(answer);
}

/** One line for logs: what the op does, without PEM contents. */
export function describeOp(op: RuntimeOp): string {
  switch (op.kind) {
    case 'add-server':
      return `add server ${op.backend}/${op.server.name} ${formatAddress(op.server.address, op.server.port)}`;
    case 'remove-server':
      return `remove server ${op.backend}/${op.server}`;
    case 'set-weight':
      return `set weight ${op.backend}/${op.server} ${op.weight}`;
    case 'set-address':
      return `set address ${op.backend}/${op.server} ${formatAddress(op.address, op.port)}`;
    case 'set-leaf':
      return `set ssl cert ${op.path}`;
    case 'set-intentions-epoch':
      return `set intentions epoch ${op.epoch} in ${op.path}`;
    case 'set-split-weights':
      return `set split cuts ${op.entries.map(([k, v]) => `${k}=${v}`).join(' ')} in ${op.path}`;
  }
}
