/**
 * Files HAProxy reads (haproxy.cfg, certificates, crt-lists, SPOE config) are written atomically —
 * temp file in the same directory, write, chmod, fsync, rename — and only when their bytes or mode
 * change, so an unchanged file keeps its inode and mtime. Files this writer wrote earlier and no
 * longer lists are removed; files it never wrote are never touched (no directory scans).
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HaproxyConnectError, errorMessage } from '../errors.js';

export const RUN_DIR_PREFIX = 'haproxy-connect-';
const RUN_DIR_MODE = 0o700;
const PERMISSION_BITS = 0o7777;

export interface ManagedFile {
  /** A plain file name inside the directory: no separators, not '.' or '..'. */
  name: string;
  content: string | Uint8Array;
  /** e.g. 0o600 for keys, 0o644 for the config. Applied with chmod, so the umask does not matter. */
  mode: number;
}

export interface WriteResult {
  /** Names written or re-moded in this call, in input order. */
  changed: string[];
  /** Names removed because an earlier call wrote them and this one no longer lists them. */
  removed: string[];
}

function assertPlainName(dir: string, name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || name.includes(path.sep)) {
    throw new HaproxyConnectError('CONFIG_INVALID', `Refusing to write file '${name}' in ${dir}: not a plain file name`);
  }
}

function fileError(action: string, file: string, err: unknown): HaproxyConnectError {
  return new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot ${action} ${file}: ${errorMessage(err)}`, { cause: err });
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** Writes one file unless its bytes and mode are already right. Returns true if it changed anything. */
async function writeOne(dir: string, file: ManagedFile): Promise<boolean> {
  const target = path.join(dir, file.name);
  const bytes = typeof file.content === 'string' ? Buffer.from(file.content, 'utf8') : Buffer.from(file.content);
  const mode = file.mode & PERMISSION_BITS;

  let existing: Buffer | undefined;
  let existingMode: number | undefined;
  try {
    const stat = await fs.lstat(target);
    if (stat.isFile()) {
      existingMode = stat.mode & PERMISSION_BITS;
      existing = await fs.readFile(target);
    }
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw fileError('read', target, err);
  }
  if (existing?.equals(bytes)) {
    if (existingMode === mode) return false;
    try {
      await fs.chmod(target, mode);
    } catch (err) {
      throw fileError('chmod', target, err);
    }
    return true;
  }

  const tmp = await writeSyncedTemp(target, bytes, mode);
  try {
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw fileError('write', target, err);
  }
  return true;
}

/**
 * The one way files are written here: a new temp file next to `target` (O_EXCL: never follows or
 * reuses something already there), written whole, chmod'ed (the umask does not matter) and
 * fsync'ed; its path is returned for the caller to rename (or link) into place. On failure it is
 * removed and FILE_WRITE_FAILED names `target`.
 */
export async function writeSyncedTemp(target: string, bytes: string | Uint8Array, mode: number): Promise<string> {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
    await handle.writeFile(bytes);
    await handle.chmod(mode);
    await handle.sync();
    await handle.close();
    handle = undefined;
    return tmp;
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw fileError('write', target, err);
  }
}

/** fsync the directory so the renames themselves survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes a batch of files atomically, each only if it differs. Removes nothing: use ManagedFiles
 * when files that drop out of the list must be deleted.
 */
export async function writeFilesAtomic(dir: string, files: readonly ManagedFile[]): Promise<WriteResult> {
  const seen = new Set<string>();
  for (const file of files) {
    assertPlainName(dir, file.name);
    if (seen.has(file.name)) {
      throw new HaproxyConnectError('CONFIG_INVALID', `File '${file.name}' listed twice for ${dir}`);
    }
    seen.add(file.name);
  }
  const changed: string[] = [];
  for (const file of files) {
    if (await writeOne(dir, file)) changed.push(file.name);
  }
  if (changed.length > 0) await syncDir(dir);
  return { changed, removed: [] };
}

/**
 * Owns a set of files in one directory. Each write() states the complete list; files an earlier
 * write() produced that are missing from the list are deleted. Calls are serialized.
 */
export class ManagedFiles {
  readonly dir: string;
  readonly #written = new Set<string>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Names this writer currently owns. */
  get names(): string[] {
    return [...this.#written].sort();
  }

  write(files: readonly ManagedFile[]): Promise<WriteResult> {
    const next = this.#queue.then(() => this.#write(files));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #write(files: readonly ManagedFile[]): Promise<WriteResult> {
    const wanted = new Set(files.map((f) => f.name));
    const { changed } = await writeFilesAtomic(this.dir, files);
    // Only after every write succeeded: a failed batch must not lose files still referenced.
    for (const name of wanted) this.#written.add(name);
    const removed: string[] = [];
    for (const name of [...this.#written].sort()) {
      if (wanted.has(name)) continue;
      const target = path.join(this.dir, name);
      try {
        await fs.rm(target, { force: true });
      } catch (err) {
        throw fileError('remove', target, err);
      }
      this.#written.delete(name);
      removed.push(name);
    }
    if (removed.length > 0) await syncDir(this.dir);
    return { changed, removed };
  }
}

/** Creates a private run directory (mode 0700 whatever the umask) under `base` (default: the OS temp dir). */
export async function createRunDir(base: string = os.tmpdir(), prefix: string = RUN_DIR_PREFIX): Promise<string> {
  let dir: string;
  try {
    dir = await fs.mkdtemp(path.join(base, prefix));
    await fs.chmod(dir, RUN_DIR_MODE);
  } catch (err) {
    throw fileError('create a run directory under', base, err);
  }
  return dir;
}

/** Removes a run directory and everything in it. Refuses anything but an absolute, non-root path. */
export async function removeRunDir(dir: string): Promise<void> {
  const resolved = path.resolve(dir);
  if (!path.isAbsolute(dir) || resolved === path.parse(resolved).root) {
    throw new HaproxyConnectError('CONFIG_INVALID', `Refusing to remove run directory '${dir}'`);
  }
  try {
    await fs.rm(resolved, { recursive: true, force: true });
  } catch (err) {
    throw fileError('remove run directory', resolved, err);
  }
}
