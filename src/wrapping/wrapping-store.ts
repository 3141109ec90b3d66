import type pg from 'pg';
import { inStoreTransaction, storeQuery, type StoreDb } from '../store/query.js';
import type { Sealed } from './seal.js';

/** What a wrapping row says about itself without its token: never the answer. */
export interface WrappingMeta {
  accessor: string;
  creation_path: string;
  creation_time: Date;
  /** Whole seconds from creation to expiry. */
  creation_ttl: number;
}

/** A row taken for unwrapping or rewrapping: its metadata and the sealed answer. */
export interface WrappingRow extends WrappingMeta, Sealed {}

const META = `accessor, creation_path, creation_time,
  round(extract(epoch FROM expires_at - creation_time))::int AS creation_ttl`;

interface RawRow extends WrappingMeta {
  salt: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
  auth_tag: Buffer;
}

const toRow = ({ auth_tag, ...rest }: RawRow): WrappingRow => ({ ...rest, tag: auth_tag });

/** Stores a sealed answer that expires `ttlSeconds` from now by the store's clock. */
export async function insertWrapping(
  db: StoreDb,
  row: { tokenHash: Buffer; accessor: string; creationPath: string; ttlSeconds: number; sealed: Sealed },
): Promise<WrappingMeta> {
  const { rows } = await storeQuery<WrappingMeta>(db, {
    name: 'credbroker.insert_wrapping',
    text: `INSERT INTO credbroker_wrapped_responses
             (token_hash, accessor, creation_path, expires_at, salt, iv, ciphertext, auth_tag)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8), $5, $6, $7, $8)
           RETURNING ${META}`,
    values: [
      row.tokenHash,
      row.accessor,
      row.creationPath,
      row.ttlSeconds,
      row.sealed.salt,
      row.sealed.iv,
      row.sealed.ciphertext,
      row.sealed.tag,
    ],
  });
  return rows[0]!;
}

/**
 * Takes a live row: deleted and returned in one statement, so of two concurrent takes of one
 * token exactly one gets it. Null for a token unknown, already taken or expired.
 */
export async function takeWrapping(db: StoreDb, tokenHash: Buffer): Promise<WrappingRow | null> {
  const { rows } = await storeQuery<RawRow>(db, {
    name: 'credbroker.take_wrapping',
    text: `DELETE FROM credbroker_wrapped_responses WHERE token_hash = $1 AND expires_at > now()
           RETURNING ${META}, salt, iv, ciphertext, auth_tag`,
    values: [tokenHash],
  });
  return rows[0] ? toRow(rows[0]) : null;
}

/** A live row's metadata, left in place. */
export async function findWrapping(db: StoreDb, tokenHash: Buffer): Promise<WrappingMeta | null> {
  const { rows } = await storeQuery<WrappingMeta>(db, {
    name: 'credbroker.find_wrapping',
    text: `SELECT ${META} FROM credbroker_wrapped_responses WHERE token_hash = $1 AND expires_at > now()`,
    values: [tokenHash],
  });
  return rows[0] ?? null;
}

/** Deletes a row whatever its state: an answer that was sealed but never handed out. */
export async function deleteWrapping(db: StoreDb, tokenHash: Buffer): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.delete_wrapping',
    text: 'DELETE FROM credbroker_wrapped_responses WHERE token_hash = $1',
    values: [tokenHash],
  });
}

/**
 * Replaces a live row by another in one transaction: `reseal` gets the old row and returns the
 * new one. If anything fails, the old token stays valid and no new one exists.
 */
export function replaceWrapping(
  pool: pg.Pool,
  tokenHash: Buffer,
  reseal: (old: WrappingRow) => Parameters<typeof insertWrapping>[1],
): Promise<WrappingMeta | null> {
  return inStoreTransaction(pool, async (client) => {
    const old = await takeWrapping(client, tokenHash);
    return old ? insertWrapping(client, reseal(old)) : null;
  });
}
