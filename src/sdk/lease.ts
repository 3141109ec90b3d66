import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import type pg from 'pg';
import { awsCredentialProvider, type AwsCredentialIdentityProvider } from './aws.js';
import type { CredentialData } from './credential.js';
import { pgConfigOf } from './pg-config.js';

export type { CredentialData };

/**
 * What a lease asks for: `ttl` (seconds or a duration like `"15m"`, capped by the role's max_ttl),
 * `idempotencyKey` (sent as `X-Credbroker-Idempotency-Key`, so a retried request returns the same
 * lease), `autoRenew` (default true), and `params` for engine-specific fields (AWS `role_arn`).
 *
 * @example
 * ```ts
 * const lease = await broker.lease('db/creds/reader', { ttl: '15m', idempotencyKey: `${podUid}/reader` });
 * ```
 */
export interface LeaseOptions {
  ttl?: number | string;
  idempotencyKey?: string;
  /**
   * What to do when the key already names a live lease whose credential this caller does not
   * hold (a crashed run's): `throw` a LeaseInUseError (default), or `replace` it (revoke, ask again).
   */
  onConflict?: 'throw' | 'replace';
  autoRenew?: boolean;
  params?: Record<string, unknown>;
}

/**
 * Why a lease will not be renewed any more: `max_ttl` (the role's cap is reached), `not_renewable`,
 * or `renew_failed` (the broker refused, or stayed unreachable until the lease ran out).
 *
 * @example
 * ```ts
 * lease.on('expiring', ({ reason }: ExpiringEvent) => reason === 'renew_failed' && alert());
 * ```
 */
export type ExpiringReason = 'max_ttl' | 'not_renewable' | 'renew_failed';

/**
 * The payload of a lease's `expiring` event: the lease ends at `expiresAt` and will not be renewed
 * again, so the caller takes a new one before then.
 *
 * @example
 * ```ts
 * lease.on('expiring', ({ expiresAt, reason }) => console.log(`lease ends at ${expiresAt.toISOString()} (${reason})`));
 * ```
 */
export interface ExpiringEvent {
  expiresAt: Date;
  reason: ExpiringReason;
  error?: Error;
}

/**
 * What a lease needs from its broker; the Broker implements it.
 *
 * @example
 * ```ts
 * const lease = new Lease(broker, issued); // broker: a LeaseClient
 * ```
 */
export interface LeaseClient {
  renewLease(
    id: string,
    incrementSeconds: number | undefined,
    until: number,
  ): Promise<{ leaseDuration: number; capped: boolean }>;
  revokeLease(id: string): Promise<void>;
  lease(path: string, opts?: LeaseOptions): Promise<Lease>;
}

/**
 * The envelope a lease starts from: Vault's answer to `PUT /v1/<path>`.
 *
 * @example
 * ```ts
 * const issued: IssuedLease = { path: 'db/creds/r', leaseId: 'db/creds/r/abc', leaseDuration: 600, renewable: true, data };
 * ```
 */
export interface IssuedLease {
  path: string;
  leaseId: string;
  leaseDuration: number;
  renewable: boolean;
  data: CredentialData;
}

/**
 * When the next renewal runs: two thirds of the time left, give or take 10 %, so leases taken together spread out.
 *
 * @example
 * ```ts
 * setTimeout(renew, renewDelay(lease.expiresAt.getTime() - Date.now()));
 * ```
 */
export function renewDelay(msLeft: number, random: () => number = Math.random): number {
  return Math.max(0, Math.round(msLeft * (2 / 3) * (0.9 + 0.2 * random())));
}

const REDACTED = '[redacted]';

/**
 * A lease on a credential. `data` holds the credential; it is not an own enumerable property, and
 * `util.inspect`, `toString()` and `JSON.stringify` of a lease show its id and times, never its
 * values. While `autoRenew` is on, the lease renews itself at about two thirds of the time left
 * (retrying through connection errors and 5xx, so a broker restart does not lose it), until the
 * role's max_ttl; then it emits `expiring`. `revoke()` (or leaving an `await using` scope) ends it.
 *
 * Events: `renewed` (the new `expiresAt`), `expiring` ({@link ExpiringEvent}), `revoked`.
 *
 * @example
 * ```ts
 * await using lease = await broker.lease('db/creds/reader', { ttl: '10m' });
 * const client = new pg.Client(lease.pgConfig());
 * await client.connect();
 * ```
 */
export class Lease<D extends CredentialData = CredentialData> extends EventEmitter implements AsyncDisposable {
  readonly id: string;
  readonly path: string;
  readonly renewable: boolean;
  #expiresAt: Date;
  readonly #data: D;
  readonly #client: LeaseClient;
  readonly #increment: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #state: 'active' | 'spent' | 'revoked' = 'active';
  #revoking: Promise<void> | undefined;

  constructor(client: LeaseClient, issued: IssuedLease, opts: LeaseOptions = {}) {
    super();
    this.#client = client;
    this.id = issued.leaseId;
    this.path = issued.path;
    this.renewable = issued.renewable;
    this.#data = issued.data as D;
    this.#expiresAt = new Date(Date.now() + issued.leaseDuration * 1000);
    // Renew by what was asked for, or by what the first answer gave.
    this.#increment = issued.leaseDuration > 0 ? issued.leaseDuration : undefined;
    if (opts.autoRenew !== false) this.#schedule();
  }

  /** The credential (PostgreSQL: username, password, host, port, database). */
  get data(): D {
    return this.#data;
  }

  /** When the lease ends unless renewed; moves at each renewal. */
  get expiresAt(): Date {
    return this.#expiresAt;
  }

  /** Whether the lease was revoked (by `revoke()` or a disposed scope). */
  get revoked(): boolean {
    return this.#state === 'revoked';
  }

  /**
   * Renews now by `incrementSeconds` (default: the lease's first duration), within the role's
   * max_ttl; resolves with the new expiry. Retries on connection errors and 5xx until the lease
   * would have ended.
   *
   * @example
   * ```ts
   * const until = await lease.renew(600);
   * ```
   */
  async renew(incrementSeconds: number | undefined = this.#increment): Promise<Date> {
    const started = Date.now();
    const { leaseDuration, capped } = await this.#client.renewLease(
      this.id,
      incrementSeconds,
      this.#expiresAt.getTime(),
    );
    this.#expiresAt = new Date(started + leaseDuration * 1000);
    this.emit('renewed', this.#expiresAt);
    if (capped) this.#spend({ reason: 'max_ttl' });
    return this.#expiresAt;
  }

  /**
   * Revokes the lease (the credential stops working now) and stops renewing it. Idempotent:
   * a second call, or a call after the lease ended, succeeds.
   *
   * @example
   * ```ts
   * await lease.revoke();
   * ```
   */
  revoke(): Promise<void> {
    this.#stopTimer();
    // No renewal in flight may schedule another once the revoke is under way.
    if (this.#state === 'active') this.#state = 'spent';
    this.#revoking ??= this.#client.revokeLease(this.id).then(
      () => {
        this.#state = 'revoked';
        this.emit('revoked');
      },
      (err: unknown) => {
        this.#revoking = undefined;
        throw err;
      },
    );
    return this.#revoking;
  }

  /**
   * Stops the automatic renewal; the lease stays valid until `expiresAt`.
   *
   * @example
   * ```ts
   * lease.stopRenewing();
   * ```
   */
  stopRenewing(): void {
    this.#stopTimer();
    if (this.#state === 'active') this.#state = 'spent';
  }

  /**
   * A `pg` ClientConfig/PoolConfig for this credential: host, port, database, user, password, and
   * `ssl` from the credential's sslmode when it has one.
   *
   * @example
   * ```ts
   * const pool = new pg.Pool({ ...lease.pgConfig(), max: 4 });
   * ```
   */
  pgConfig(): pg.ClientConfig & pg.PoolConfig {
    return pgConfigOf(this.#data);
  }

  /**
   * An AWS SDK v3 credential provider for this lease's path: it answers with this lease's keys
   * while the lease renews, and takes a new lease once this one can no longer be renewed.
   *
   * @example
   * ```ts
   * const s3 = new S3Client({ credentials: lease.awsCredentials() });
   * ```
   */
  awsCredentials(): AwsCredentialIdentityProvider {
    return awsCredentialProvider(this, () => this.#client.lease(this.path, { ttl: this.#increment }));
  }

  /** Revokes the lease when an `await using` scope ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.revoke();
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      path: this.path,
      expiresAt: this.#expiresAt.toISOString(),
      renewable: this.renewable,
      data: Object.fromEntries(Object.keys(this.#data).map((k) => [k, REDACTED])),
    };
  }

  override toString(): string {
    return `Lease(${this.id}, expires ${this.#expiresAt.toISOString()})`;
  }

  [inspect.custom](): string {
    return `Lease ${inspect(this.toJSON())}`;
  }

  #schedule(): void {
    this.#stopTimer();
    const delay = renewDelay(this.#expiresAt.getTime() - Date.now());
    this.#timer = setTimeout(() => void this.#autoRenew(), delay);
    // A lease someone forgot must not keep the process alive.
    this.#timer.unref();
  }

  async #autoRenew(): Promise<void> {
    this.#timer = undefined;
    if (this.#state !== 'active') return;
    // Told when a renewal would have run, not at once: a caller that takes a new lease on
    // `expiring` would otherwise take one after another.
    if (!this.renewable) return this.#spend({ reason: 'not_renewable' });
    try {
      await this.renew();
    } catch (err) {
      if (this.#state === 'active') this.#spend({ reason: 'renew_failed', error: err as Error });
      return;
    }
    if (this.#state === 'active') this.#schedule();
  }

  #spend(event: Omit<ExpiringEvent, 'expiresAt'>): void {
    this.#stopTimer();
    if (this.#state !== 'active') return;
    this.#state = 'spent';
    // On a later turn: the caller of `renew()` sees its promise settle before the listeners run.
    setImmediate(() => this.emit('expiring', { expiresAt: this.#expiresAt, ...event } satisfies ExpiringEvent));
  }

  #stopTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
