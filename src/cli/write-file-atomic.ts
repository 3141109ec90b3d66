import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The file's permissions (default 0600) and owner (default: the writer's own). */
export interface AtomicFileOptions {
  mode?: number;
  uid?: number;
  gid?: number;
}

/**
 * Writes a secret file so no reader ever sees it half-written or world-readable: a 0600 temp
 * file in the same directory, fsynced, given its mode and owner, then renamed over the target.
 */
export async function writeFileAtomic(path: string, content: string, opts: AtomicFileOptions = {}): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', 0o600);
  try {
    await file.writeFile(content);
    // Owner before mode: a chown may clear setuid bits, and the mode is what the caller asked for.
    if (opts.uid !== undefined || opts.gid !== undefined) await file.chown(opts.uid ?? -1, opts.gid ?? -1);
    // Explicitly, as open()'s mode is filtered by the umask.
    await file.chmod(opts.mode ?? 0o600);
    await file.sync();
  } catch (err) {
    await file.close();
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await file.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}
