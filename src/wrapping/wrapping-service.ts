import { createHash } from 'node:crypto';
import type pg from 'pg';
import { BrokerError, InvalidWrappingToken } from '../errors.js';
import type { LeaseView } from '../leases/lease-view.js';
import { randomName, randomSecret } from '../random.js';
import { open, seal } from './seal.js';
import {
  deleteWrapping,
  findWrapping,
  insertWrapping,
  replaceWrapping,
  takeWrapping,
  type WrappingMeta,
  type WrappingRow,
} from './wrapping-store.js';

/** Told apart from broker tokens (`cbt.`) at a glance, and never accepted as one. */
const TOKEN_PREFIX = 'cbw.';
const TOKEN_SHAPE = /^cbw\.[A-Za-z0-9_-]{43}$/;

/** Vault's `wrap_info`. */
export interface WrapInfo {
  token: string;
  accessor: string;
  ttl: number;
  /** RFC 3339. */
  creation_time: string;
  creation_path: string;
  /** The accessor of the broker token a wrapped login answer carries. */
  wrapped_accessor?: string;
}

/** A JSON answer, as a route built it. */
export type Answer = Record<string, unknown>;

/** The lease lookup unwrap needs: whether the wrapped credential still lives. */
export interface LeaseFinder {
  find(leaseId: string): Promise<LeaseView | null>;
}

const hashOf = (token: string) => createHash('sha256').update(token, 'utf8').digest();

/** A token that cannot be one of ours is refused without a store query. */
function hashOfValid(token: unknown): Buffer {
  if (typeof token !== 'string' || !TOKEN_SHAPE.test(token)) throw new InvalidWrappingToken();
  return hashOf(token);
}

function wrappedAccessorOf(answer: Answer): string | undefined {
  const auth = answer.auth as { accessor?: unknown } | null | undefined;
  return auth && typeof auth.accessor === 'string' && auth.accessor ? auth.accessor : undefined;
}

function wrapInfo(token: string, meta: WrappingMeta, answer: Answer): WrapInfo {
  const wrappedAccessor = wrappedAccessorOf(answer);
  return {
    token,
    accessor: meta.accessor,
    ttl: meta.creation_ttl,
    creation_time: meta.creation_time.toISOString(),
    creation_path: meta.creation_path,
    ...(wrappedAccessor ? { wrapped_accessor: wrappedAccessor } : {}),
  };
}

/**
 * Vault's response wrapping: an answer sealed under a single-use token (seal.ts), of which the
 * store keeps only a hash. Unwrap, lookup and rewrap take the token itself; possession is the
 * authority. Expired rows are deleted by the store tidy.
 */
export class WrappingService {
  constructor(
    private readonly pool: pg.Pool,
    private readonly leases: LeaseFinder,
  ) {}

  /** Seals `answer` under a new token that lives `ttlSeconds`. */
  async wrap(answer: Answer, opts: { ttlSeconds: number; creationPath: string }): Promise<WrapInfo> {
    const token = `${TOKEN_PREFIX}${randomSecret()}`;
    const meta = await insertWrapping(this.pool, this.sealed(token, answer, opts.creationPath, opts.ttlSeconds));
    return wrapInfo(token, meta, answer);
  }

  /**
   * The wrapped answer, once: the row is deleted as it is read. `warnings` says when the lease the
   * answer carries is no longer active (the credential is answered all the same, as Vault does).
   */
  async unwrap(token: unknown): Promise<{ answer: Answer; warnings: string[] }> {
    const row = await takeWrapping(this.pool, hashOfValid(token));
    if (!row) throw new InvalidWrappingToken();
    const answer = this.opened(token as string, row);
    return { answer, warnings: await this.leaseWarnings(answer) };
  }

  /** What a live token wraps, without unwrapping it: its path, creation time and TTL. */
  async lookup(token: unknown): Promise<{ creation_path: string; creation_time: string; creation_ttl: number }> {
    const meta = await findWrapping(this.pool, hashOfValid(token));
    if (!meta) throw new InvalidWrappingToken();
    return {
      creation_path: meta.creation_path,
      creation_time: meta.creation_time.toISOString(),
      creation_ttl: meta.creation_ttl,
    };
  }

  /**
   * The same answer under a new token with the old one's path and TTL; the old token is dead.
   * `leaseId`: the lease the answer carries, if any.
   */
  async rewrap(token: unknown): Promise<{ wrapInfo: WrapInfo; leaseId?: string }> {
    const newToken = `${TOKEN_PREFIX}${randomSecret()}`;
    let answer: Answer = {};
    const meta = await replaceWrapping(this.pool, hashOfValid(token), (old) => {
      answer = this.opened(token as string, old);
      return this.sealed(newToken, answer, old.creation_path, old.creation_ttl);
    });
    if (!meta) throw new InvalidWrappingToken();
    const leaseId = typeof answer.lease_id === 'string' && answer.lease_id ? answer.lease_id : undefined;
    return { wrapInfo: wrapInfo(newToken, meta, answer), ...(leaseId ? { leaseId } : {}) };
  }

  /** Deletes a wrapped answer that was never handed out (its audit record failed). */
  async discard(token: string): Promise<void> {
    await deleteWrapping(this.pool, hashOf(token));
  }

  private sealed(token: string, answer: Answer, creationPath: string, ttlSeconds: number) {
    const tokenHash = hashOf(token);
    return {
      tokenHash,
      accessor: randomName(24),
      creationPath,
      ttlSeconds,
      sealed: seal(token, Buffer.from(JSON.stringify(answer), 'utf8'), tokenHash),
    };
  }

  private opened(token: string, row: WrappingRow): Answer {
    try {
      return JSON.parse(open(token, row, hashOf(token)).toString('utf8')) as Answer;
    } catch (err) {
      // The hash matched, so only a damaged row gets here: a fault of ours, not the caller's.
      throw new BrokerError('a wrapped answer did not decrypt with its own token', { cause: err });
    }
  }

  private async leaseWarnings(answer: Answer): Promise<string[]> {
    const leaseId = answer.lease_id;
    if (typeof leaseId !== 'string' || !leaseId) return [];
    // The answer is already taken: a failed lookup must not lose it, only its warning.
    const lease = await this.leases.find(leaseId).catch(() => undefined);
    if (lease === undefined) return [`the state of lease ${leaseId} could not be checked`];
    if (!lease) return [`lease ${leaseId} is no longer active (not found)`];
    if (lease.state !== 'active') return [`lease ${leaseId} is no longer active (${lease.state})`];
    if (lease.secondsLeft <= 0) return [`lease ${leaseId} is no longer active (expired)`];
    return [];
  }
}
