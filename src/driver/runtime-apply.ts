/**
 * Applies the planner's runtime ops (src/haproxy/runtime-ops.ts) over one runtime session: server
 * ops pipelined, TLS ops alone and in plan order, a refused `del server` retried briefly and then
 * reported pending. Every op gets a result; nothing here throws for a refused command.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { X509Certificate } from 'node:crypto';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { STILL_HAS_CONNECTIONS, describeOp, isExpected, opCommands, type RuntimeOp } from '../haproxy/runtime-ops.js';
import type { RuntimeOpStatus } from '../domain/haproxy.js';
import { parseShowSslCert } from '../haproxy/runtime-state.js';
import { RuntimeCommandError, RuntimeSession, type SessionOptions } from './runtime-session.js';

/** Ops in flight at once. HAProxy runs a session's commands one by one; this only hides round trips. */
const PIPELINE_WINDOW = 64;
/**
 * A refused `del server` is retried this often, this far apart, then reported pending for the
 * reconciler's timer: one quick retry covers the usual ~1 ms release, and a runtime batch is never
 * held up for long by a deletion.
 */
const DELETE_RETRIES = 1;
const DELETE_RETRY_DELAY_MS = 2;
export type OpStatus = RuntimeOpStatus;

export interface OpResult {
  op: RuntimeOp;
  status: OpStatus;
  /** For `failed`: the command HAProxy refused (or the session error). */
  error: HaproxyConnectError | undefined;
}

async function applyOne(session: RuntimeSession, op: RuntimeOp): Promise<OpResult> {
  try {
    const commands = opCommands(op);
    for (const cmd of commands) {
      if (op.kind === 'remove-server' && cmd.line.startsWith('del server ')) {
        // Idle connections are released asynchronously after maintenance (measured on 2.6.12: a
        // `del server` right after `disable server` was refused, then accepted ~1 ms later; pooled
        // idle connections have also held on until the pool purge delay, and active ones until
        // they close): retry briefly, then report pending for the reconciler to retry.
        for (let attempt = 0; ; attempt += 1) {
          const answer = await session.send(cmd.line);
          if (isExpected(cmd, answer)) break;
          if (!STILL_HAS_CONNECTIONS.test(answer)) throw new RuntimeCommandError(cmd.line, answer);
          if (attempt >= DELETE_RETRIES) return { op, status: 'pending-deletion', error: new RuntimeCommandError(cmd.line, answer) };
          await delay(DELETE_RETRY_DELAY_MS);
        }
        continue;
      }
      await session.run(cmd);
    }
    if (op.kind === 'set-leaf') await verifyLeaf(session, op.path, op.pem);
    return { op, status: 'ok', error: undefined };
  } catch (err) {
    const error = err instanceof HaproxyConnectError ? err : new HaproxyConnectError('HAPROXY_CLI', `${describeOp(op)} failed: ${errorMessage(err)}`, { cause: err });
    return { op, status: 'failed', error };
  }
}

/**
 * Measured on 2.6.12: after a `commit ssl ca-file`, `show ssl cert <leaf>` says `Status: Unused`
 * and every later `commit ssl cert` prints "Success!" yet changes nothing (the bind and the
 * server lines keep the old leaf) until the next reload. So a leaf commit is only trusted when
 * HAProxy reports the new serial in use; otherwise the op fails and the caller reloads.
 */
async function verifyLeaf(session: RuntimeSession, path: string, pem: string): Promise<void> {
  const line = `show ssl cert ${path}`;
  const answer = await session.send(line);
  const live = parseShowSslCert(answer);
  const expected = new X509Certificate(pem).serialNumber.toUpperCase();
  if (live.status !== 'Used' || live.serial.toUpperCase() !== expected) {
    throw new HaproxyConnectError(
      'HAPROXY_CLI',
      `commit ssl cert ${path} reported success but HAProxy shows serial ${live.serial} with status ${live.status ?? 'unknown'} (expected ${expected}, Used); a reload is needed`,
    );
  }
}

/** The leaf op runs alone (it is verified with `show ssl cert` after its commit); server ops run pipelined. */
function isBarrier(op: RuntimeOp): boolean {
  return op.kind === 'set-leaf';
}

function isRemoval(op: RuntimeOp): boolean {
  return op.kind === 'remove-server';
}

/**
 * Applies ops in order over one session (or a new one on `socket`). Never throws for a refused
 * command: every op gets a result. A session error (socket closed, timeout, abort) fails the
 * ops not yet answered; the caller compares with `show servers state` or reloads.
 */
export async function applyOps(socket: string | RuntimeSession, ops: readonly RuntimeOp[], options: SessionOptions = {}): Promise<OpResult[]> {
  const owned = typeof socket === 'string';
  const session = owned ? await RuntimeSession.open(socket, options) : socket;
  const results: OpResult[] = new Array<OpResult>(ops.length);
  try {
    let i = 0;
    while (i < ops.length) {
      const op = ops[i] as RuntimeOp;
      if (isBarrier(op)) {
        results[i] = await applyOne(session, op);
        i += 1;
        continue;
      }
      // Removals wait until every add, move and weight change before them has been answered: pipelined
      // together, a removal's `disable server` could land between a revived server's `disable` and
      // `enable` and leave the backend without a usable server for a moment (measured: 503s).
      let end = i;
      while (end < ops.length && !isBarrier(ops[end] as RuntimeOp) && isRemoval(ops[end] as RuntimeOp) === isRemoval(op)) end += 1;
      let next = i;
      const worker = async (): Promise<void> => {
        while (next < end) {
          const index = next++;
          results[index] = await applyOne(session, ops[index] as RuntimeOp);
        }
      };
      await Promise.all(Array.from({ length: Math.min(PIPELINE_WINDOW, end - i) }, worker));
      i = end;
    }
  } finally {
    if (owned) session.close();
  }
  return results;
}
