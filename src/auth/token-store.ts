import { createHash } from 'node:crypto';
import type pg from 'pg';
import { randomName, randomSecret } from '../random.js';
import { storeQuery } from '../store/query.js';
import type { Identity } from './identity.js';

export interface TokenRow {
  accessor: string;
  identity: {
    name: string;
    auth_mount: string;
    metadata: Record<string, string>;
    role?: string;
    ttl?: number;
    /** The token's display name after `<mount>-`, when the auth role sets one (a cert role's display_name). */
    display_name?: string;
  };
  policies: string[];
  issued_at: Date;
  expires_at: Date;
  max_expires_at: Date;
  revoke_leases: boolean;
  revoked_at: Date | null;
}

/** How long a token check may be answered from memory: a revocation takes effect within this. */
const CACHE_MS = 1000;
const TOKEN_PREFIX = 'cbt.';

const hashOf = (token: string) => createHash('sha256').update(token).digest();

/**
 * Broker tokens. Every query goes through storeQuery, so a store that is down answers 503 here as
 * everywhere. Only a SHA-256 of each token is stored (a token carries 256 random bits, so a
 * slow hash would add nothing). A check costs one indexed lookup, cached for at most a second.
 */
export class TokenStore {
  private readonly cache = new Map<string, { row: TokenRow | null; until: number }>();

  constructor(private readonly pool: pg.Pool) {}

  async create(opts: {
    identity: Identity;
    role: string;
    displayName?: string;
    ttlSeconds: number;
    maxTtlSeconds: number;
    revokeLeases: boolean;
  }): Promise<{ token: string; row: TokenRow }> {
    const token = `${TOKEN_PREFIX}${randomSecret()}`;
    const { rows } = await storeQuery<TokenRow>(this.pool, {
      name: 'credbroker.create_token',
      text: `INSERT INTO credbroker_tokens (accessor, token_hash, identity, policies, expires_at, max_expires_at, revoke_leases)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => least($5::float8, $6::float8)), now() + make_interval(secs => $6::float8), $7)
       RETURNING *`,
      values: [
        randomName(24),
        hashOf(token),
        {
          name: opts.identity.name,
          auth_mount: opts.identity.authMount,
          metadata: opts.identity.metadata,
          role: opts.role,
          ttl: opts.ttlSeconds,
          ...(opts.displayName ? { display_name: opts.displayName } : {}),
        },
        opts.identity.policies,
        opts.ttlSeconds,
        opts.maxTtlSeconds,
        opts.revokeLeases,
      ],
    });
    return { token, row: rows[0]! };
  }

  /** The live token row for a presented token, or null (unknown, expired or revoked). */
  async find(token: string): Promise<TokenRow | null> {
    if (!token.startsWith(TOKEN_PREFIX) || token.length > 100) return null;
    const key = hashOf(token).toString('base64');
    const cached = this.cache.get(key);
    if (cached && cached.until > Date.now()) return live(cached.row);
    const { rows } = await storeQuery<TokenRow>(this.pool, {
      name: 'credbroker.find_token',
      text: 'SELECT * FROM credbroker_tokens WHERE token_hash = $1',
      values: [hashOf(token)],
    });
    const row = rows[0] ?? null;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { row, until: Date.now() + CACHE_MS });
    return live(row);
  }

  /** Moves the expiry forward by `increment` (default: the auth role's token_ttl) from now, never past the token's max. */
  async renew(accessor: string, incrementSeconds: number | undefined): Promise<TokenRow | null> {
    const { rows } = await storeQuery<TokenRow>(this.pool, {
      name: 'credbroker.renew_token',
      text: `UPDATE credbroker_tokens
          SET expires_at = least(now() + make_interval(secs => coalesce($2::float8, (identity->>'ttl')::float8, 3600)), max_expires_at)
        WHERE accessor = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING *`,
      values: [accessor, incrementSeconds ?? null],
    });
    this.cache.clear();
    return rows[0] ?? null;
  }

  /**
   * Claims tokens that expired and take their leases with them: marked revoked in the same
   * statement, so each is handed to exactly one broker replica.
   */
  async claimExpired(limit: number): Promise<TokenRow[]> {
    const { rows } = await storeQuery<TokenRow>(this.pool, {
      name: 'credbroker.claim_expired_tokens',
      text: `UPDATE credbroker_tokens SET revoked_at = now()
        WHERE accessor IN (SELECT accessor FROM credbroker_tokens
                            WHERE revoked_at IS NULL AND revoke_leases AND expires_at <= now()
                            LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING *`,
      values: [limit],
    });
    return rows;
  }

  async revoke(accessor: string): Promise<TokenRow | null> {
    const { rows } = await storeQuery<TokenRow>(this.pool, {
      name: 'credbroker.revoke_token',
      text: `UPDATE credbroker_tokens SET revoked_at = now() WHERE accessor = $1 AND revoked_at IS NULL RETURNING *`,
      values: [accessor],
    });
    this.cache.clear();
    return rows[0] ?? null;
  }
}

function live(row: TokenRow | null): TokenRow | null {
  if (!row || row.revoked_at || row.expires_at <= new Date()) return null;
  return row;
}
