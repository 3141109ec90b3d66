import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../cli/write-file-atomic.js';

/**
 * What the agent remembers of one lease across processes (the init container, then the sidecar):
 * its id, where it wrote the credential, when it ends, and which rotation it is (for the
 * idempotency key). Never the credential itself.
 */
const heldLease = z.object({
  lease_id: z.string().min(1),
  path: z.string(),
  expire_time: z.string(),
  files: z.array(z.string()),
  generation: z.number().int().min(0).default(0),
});
export type HeldLease = z.infer<typeof heldLease>;

const stateSchema = z.object({ version: z.literal(1), leases: z.record(z.string(), heldLease) });
export type AgentState = z.infer<typeof stateSchema>;

export const emptyState = (): AgentState => ({ version: 1, leases: {} });

/**
 * The state file's content, or an empty state when there is none yet; a file that is not a
 * state file is an error (it would otherwise be overwritten, and its leases forgotten).
 */
export async function readState(path: string): Promise<AgentState> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
    throw new Error(`cannot read the state file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`the state file ${path} is not JSON: remove it to start afresh`);
  }
  const result = stateSchema.safeParse(parsed);
  if (!result.success) throw new Error(`the state file ${path} is not an agent state file: remove it to start afresh`);
  return result.data;
}

/** Writes the state atomically (readable by the agent only: lease ids are not secrets, but say what to revoke). */
export async function writeState(path: string, state: AgentState): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}
