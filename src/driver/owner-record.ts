/**
 * The owner record: one small JSON file per proxy ID under -haproxy-cfg-base-path that says which
 * daemon serves that proxy, which run directory it made and which HAProxy master it started. It
 * outlives a daemon that was SIGKILLed, so the next daemon for the proxy can find what was left
 * behind (src/driver/orphans.ts).
 *
 * The file is created with link(2) of a complete temp file, which fails if the record exists (two
 * daemons cannot both create it, and no reader sees it half written; O_EXCL where the file system
 * has no hard links), and replaced atomically afterwards (temp file, fsync, rename, fsync of the
 * directory); mode 0600.
 * It holds no secret: the daemon's command line is kept as a hash (it may carry -token).
 */
import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { HaproxyConnectError, errorMessage } from '../errors.js';
import { syncDir, writeSyncedTemp } from './files.js';

const RECORD_PREFIX = 'haproxy-connect.owner.';
const RECORD_SUFFIX = '.json';
const RECORD_MODE = 0o600;
/** A record is a few hundred bytes; anything bigger is not ours. */
const MAX_RECORD_BYTES = 64 * 1024;
/** Keeps the file name readable and well under NAME_MAX (255) whatever the proxy ID. */
const MAX_NAME_PART = 64;
const HASH_CHARS = 12;

const ownerRecordSchema = z.object({
  version: z.literal(1),
  proxyId: z.string(),
  daemon: z.object({
    pid: z.number().int().positive(),
    /** /proc/<pid>/stat starttime: with the pid, it names one process. */
    startTime: z.string(),
    /** sha256 of /proc/<pid>/cmdline. */
    cmdlineSha256: z.string(),
  }),
  runDir: z.string().optional(),
  haproxyMasterPid: z.number().int().positive().optional(),
  updatedAt: z.string(),
});

export type OwnerRecord = z.infer<typeof ownerRecordSchema>;

/** What is at the record path: nothing, a record, or a file that is not a valid record. */
export type RecordRead = { kind: 'absent' } | { kind: 'valid'; record: OwnerRecord; bytes: Buffer } | { kind: 'invalid'; reason: string; bytes: Buffer };

/** The record's file name: the proxy ID made safe for a file name, plus a hash of the exact ID. */
export function ownerRecordName(proxyId: string): string {
  const safe = proxyId.replace(/[^A-Za-z0-9_-]+/g, '_').slice(0, MAX_NAME_PART);
  const hash = createHash('sha256').update(proxyId).digest('hex').slice(0, HASH_CHARS);
  return `${RECORD_PREFIX}${safe}.${hash}${RECORD_SUFFIX}`;
}

export function ownerRecordPath(baseDir: string, proxyId: string): string {
  return path.join(path.resolve(baseDir), ownerRecordName(proxyId));
}

/** sha256 of an argument vector, as /proc/<pid>/cmdline spells it (NUL after each argument). */
export function cmdlineHash(argv: readonly string[]): string {
  return createHash('sha256')
    .update(argv.map((a) => `${a}\0`).join(''))
    .digest('hex');
}

function fileError(action: string, file: string, err: unknown): HaproxyConnectError {
  return new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot ${action} owner record ${file}: ${errorMessage(err)}`, { cause: err });
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/**
 * Reads the record at `file`. A symlink, a file of another user or an oversized file is refused
 * with CONFIG_INVALID: in a shared directory such as /tmp, someone else may have put it there.
 */
export async function readOwnerRecord(file: string): Promise<RecordRead> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { kind: 'absent' };
    if (isErrno(err, 'ELOOP')) throw new HaproxyConnectError('CONFIG_INVALID', `Owner record ${file} is a symbolic link; remove it or choose another -haproxy-cfg-base-path`);
    throw fileError('read', file, err);
  }
  let bytes: Buffer;
  try {
    const stat = await handle.stat();
    const uid = process.getuid?.();
    if (!stat.isFile() || (uid !== undefined && stat.uid !== uid) || stat.size > MAX_RECORD_BYTES) {
      throw new HaproxyConnectError(
        'CONFIG_INVALID',
        `Owner record ${file} is not a regular file of at most ${MAX_RECORD_BYTES} bytes owned by uid ${uid ?? '?'} (owner uid ${stat.uid}); remove it or choose another -haproxy-cfg-base-path`,
      );
    }
    bytes = await handle.readFile();
  } catch (err) {
    if (err instanceof HaproxyConnectError) throw err;
    throw fileError('read', file, err);
  } finally {
    await handle.close();
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return { kind: 'invalid', reason: `not JSON: ${errorMessage(err)}`, bytes };
  }
  const parsed = ownerRecordSchema.safeParse(json);
  if (!parsed.success) return { kind: 'invalid', reason: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '), bytes };
  return { kind: 'valid', record: parsed.data, bytes };
}

/** Writes `record` to a new temp file next to `file` (O_EXCL, 0600, fsync) and returns its path. */
function writeTemp(file: string, record: OwnerRecord): Promise<string> {
  return writeSyncedTemp(file, `${JSON.stringify(record)}\n`, RECORD_MODE);
}

async function createExclusive(file: string, record: OwnerRecord): Promise<boolean> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, RECORD_MODE);
  } catch (err) {
    if (isErrno(err, 'EEXIST')) return false;
    throw fileError('create', file, err);
  }
  try {
    await handle.writeFile(`${JSON.stringify(record)}\n`);
    await handle.sync();
  } catch (err) {
    await fs.rm(file, { force: true }).catch(() => undefined);
    throw fileError('write', file, err);
  } finally {
    await handle.close();
  }
  await syncDir(path.dirname(file));
  return true;
}

/** Creates the record only if no file exists at `file`. Returns false if one does. */
export async function createOwnerRecord(file: string, record: OwnerRecord): Promise<boolean> {
  const tmp = await writeTemp(file, record);
  try {
    await fs.link(tmp, file);
  } catch (err) {
    if (isErrno(err, 'EEXIST')) return false;
    // A file system without hard links: O_EXCL still lets only one daemon create the record.
    if (isErrno(err, 'EPERM') || isErrno(err, 'ENOTSUP') || isErrno(err, 'EOPNOTSUPP')) return createExclusive(file, record);
    throw fileError('create', file, err);
  } finally {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
  }
  await syncDir(path.dirname(file)).catch((err: unknown) => {
    throw fileError('sync the directory of', file, err);
  });
  return true;
}

/** Replaces the record atomically (the caller owns it). */
export async function replaceOwnerRecord(file: string, record: OwnerRecord): Promise<void> {
  const tmp = await writeTemp(file, record);
  try {
    await fs.rename(tmp, file);
    await syncDir(path.dirname(file));
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw fileError('replace', file, err);
  }
}

/**
 * Removes the record if it still holds exactly `expected` (the bytes the caller read and judged):
 * a record another daemon wrote in between is left alone. Returns whether it was removed.
 */
export async function removeOwnerRecordIf(file: string, expected: Buffer): Promise<boolean> {
  let current: Buffer;
  try {
    current = await fs.readFile(file);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw fileError('read', file, err);
  }
  if (!current.equals(expected)) return false;
  try {
    await fs.rm(file, { force: true });
    await syncDir(path.dirname(file));
  } catch (err) {
    throw fileError('remove', file, err);
  }
  return true;
}
