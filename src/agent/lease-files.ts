import { writeFileAtomic } from '../cli/write-file-atomic.js';
import type { CredentialEnvelope } from '../engines.js';
import type { Lease } from '../sdk/lease.js';
import type { AgentFile } from './config.js';
import { renderFile } from './file-content.js';

/** A lease as the formats read it: Vault's envelope, with the seconds left as its duration. */
export function envelopeOf(lease: Lease, now = Date.now()): CredentialEnvelope {
  return {
    lease_id: lease.id,
    lease_duration: Math.max(0, Math.round((lease.expiresAt.getTime() - now) / 1000)),
    renewable: lease.renewable,
    data: lease.data,
  };
}

/**
 * Writes every file of a lease, each atomically with its mode and owner. All are rendered first,
 * so a template the credential cannot fill leaves every file as it was.
 */
export async function writeLeaseFiles(files: AgentFile[], envelope: CredentialEnvelope): Promise<void> {
  const now = new Date();
  const rendered = files.map((file) => {
    try {
      return { file, text: renderFile(envelope, file, now) };
    } catch (err) {
      throw new Error(`cannot render ${file.path}: ${(err as Error).message}`);
    }
  });
  for (const { file, text } of rendered) {
    try {
      await writeFileAtomic(file.path, text, { mode: file.mode, uid: file.uid, gid: file.gid });
    } catch (err) {
      throw new Error(`cannot write ${file.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}
