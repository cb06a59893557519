import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isHaproxyConnectError } from '../../src/errors.js';
import { createRunDir, ManagedFiles, removeRunDir, writeFilesAtomic } from '../../src/driver/files.js';

describe('files', () => {
  let base: string;
  before(async () => {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'hc-files-'));
  });
  after(async () => {
    await fs.rm(base, { recursive: true, force: true });
  });

  test('createRunDir makes a 0700 directory whatever the umask; removeRunDir deletes it', async () => {
    const oldUmask = process.umask(0o000);
    let dir: string;
    try {
      dir = await createRunDir(base);
    } finally {
      process.umask(oldUmask);
    }
    assert.ok(path.basename(dir).startsWith('haproxy-connect-'));
    assert.equal((await fs.stat(dir)).mode & 0o7777, 0o700);
    await fs.writeFile(path.join(dir, 'x'), 'x');
    await removeRunDir(dir);
    await assert.rejects(fs.stat(dir), { code: 'ENOENT' });
    await assert.rejects(removeRunDir('/'), (e) => isHaproxyConnectError(e, 'CONFIG_INVALID'));
    await assert.rejects(removeRunDir('relative/dir'), (e) => isHaproxyConnectError(e, 'CONFIG_INVALID'));
  });

  test('writes with the requested modes and leaves no temp files', async () => {
    const dir = await createRunDir(base);
    const result = await writeFilesAtomic(dir, [
      { name: 'haproxy.cfg', content: 'global\n', mode: 0o644 },
      { name: 'leaf.pem', content: Buffer.from('secret'), mode: 0o600 },
    ]);
    assert.deepEqual(result, { changed: ['haproxy.cfg', 'leaf.pem'], removed: [] });
    assert.equal((await fs.stat(path.join(dir, 'haproxy.cfg'))).mode & 0o7777, 0o644);
    assert.equal((await fs.stat(path.join(dir, 'leaf.pem'))).mode & 0o7777, 0o600);
    assert.equal(await fs.readFile(path.join(dir, 'leaf.pem'), 'utf8'), 'secret');
    assert.deepEqual((await fs.readdir(dir)).sort(), ['haproxy.cfg', 'leaf.pem']);
  });

  test('unchanged bytes are not rewritten (same inode and mtime); changed bytes get a new inode', async () => {
    const dir = await createRunDir(base);
    const files = [
      { name: 'a.cfg', content: 'one\n', mode: 0o644 },
      { name: 'b.pem', content: 'two\n', mode: 0o600 },
    ];
    await writeFilesAtomic(dir, files);
    const a1 = await fs.stat(path.join(dir, 'a.cfg'));
    const b1 = await fs.stat(path.join(dir, 'b.pem'));

    const again = await writeFilesAtomic(dir, files);
    assert.deepEqual(again.changed, []);
    const a2 = await fs.stat(path.join(dir, 'a.cfg'));
    assert.equal(a2.ino, a1.ino);
    assert.equal(a2.mtimeMs, a1.mtimeMs);

    const changed = await writeFilesAtomic(dir, [files[0]!, { name: 'b.pem', content: 'three\n', mode: 0o600 }]);
    assert.deepEqual(changed.changed, ['b.pem']);
    const b2 = await fs.stat(path.join(dir, 'b.pem'));
    assert.notEqual(b2.ino, b1.ino, 'replaced by rename, not rewritten in place');
    assert.equal(await fs.readFile(path.join(dir, 'b.pem'), 'utf8'), 'three\n');
    assert.equal((await fs.stat(path.join(dir, 'a.cfg'))).ino, a1.ino);
  });

  test('a mode change alone is applied with chmod', async () => {
    const dir = await createRunDir(base);
    await writeFilesAtomic(dir, [{ name: 'k.pem', content: 'k', mode: 0o644 }]);
    const before = await fs.stat(path.join(dir, 'k.pem'));
    const result = await writeFilesAtomic(dir, [{ name: 'k.pem', content: 'k', mode: 0o600 }]);
    assert.deepEqual(result.changed, ['k.pem']);
    const after = await fs.stat(path.join(dir, 'k.pem'));
    assert.equal(after.mode & 0o7777, 0o600);
    assert.equal(after.ino, before.ino);
  });

  test('ManagedFiles removes files it wrote earlier, never files it did not write', async () => {
    const dir = await createRunDir(base);
    await fs.writeFile(path.join(dir, 'foreign.txt'), 'not ours');
    const managed = new ManagedFiles(dir);
    await managed.write([
      { name: 'haproxy.cfg', content: 'v1', mode: 0o644 },
      { name: 'old-leaf.pem', content: 'old', mode: 0o600 },
    ]);
    const result = await managed.write([
      { name: 'haproxy.cfg', content: 'v2', mode: 0o644 },
      { name: 'new-leaf.pem', content: 'new', mode: 0o600 },
    ]);
    assert.deepEqual(result, { changed: ['haproxy.cfg', 'new-leaf.pem'], removed: ['old-leaf.pem'] });
    assert.deepEqual((await fs.readdir(dir)).sort(), ['foreign.txt', 'haproxy.cfg', 'new-leaf.pem']);
    assert.deepEqual(managed.names, ['haproxy.cfg', 'new-leaf.pem']);

    // A file removed behind our back is not an error.
    await fs.rm(path.join(dir, 'new-leaf.pem'));
    const emptied = await managed.write([]);
    assert.deepEqual(emptied.removed, ['haproxy.cfg', 'new-leaf.pem']);
    assert.deepEqual(await fs.readdir(dir), ['foreign.txt']);
  });

  test('concurrent writes are serialized and the last one wins', async () => {
    const dir = await createRunDir(base);
    const managed = new ManagedFiles(dir);
    await Promise.all([managed.write([{ name: 'a', content: '1', mode: 0o600 }]), managed.write([{ name: 'b', content: '2', mode: 0o600 }])]);
    assert.deepEqual(await fs.readdir(dir), ['b']);
  });

  test('names with separators, dot names and duplicates are refused', async () => {
    const dir = await createRunDir(base);
    for (const name of ['../x', 'a/b', '.', '..', '']) {
      await assert.rejects(writeFilesAtomic(dir, [{ name, content: 'x', mode: 0o600 }]), (e) => isHaproxyConnectError(e, 'CONFIG_INVALID'));
    }
    await assert.rejects(
      writeFilesAtomic(dir, [
        { name: 'a', content: 'x', mode: 0o600 },
        { name: 'a', content: 'y', mode: 0o600 },
      ]),
      (e) => isHaproxyConnectError(e, 'CONFIG_INVALID'),
    );
    assert.deepEqual(await fs.readdir(dir), []);
  });

  test('a write into a missing directory is FILE_WRITE_FAILED naming the file', async () => {
    const dir = path.join(base, 'does-not-exist');
    await assert.rejects(writeFilesAtomic(dir, [{ name: 'a', content: 'x', mode: 0o600 }]), (e) => {
      assert.ok(isHaproxyConnectError(e, 'FILE_WRITE_FAILED'));
      assert.ok(e.message.includes(path.join(dir, 'a')));
      return true;
    });
  });
});
