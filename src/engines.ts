import type { Logger } from 'pino';
import type { z } from 'zod';

/*
 * The engine contract: the types an engine implements and receives, nothing else. An engine
 * imports from src/ only this module and src/engine-kit.ts; the registry is engines/index.ts.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * Everything needed to destroy a credential, decided before it exists and stored in the lease
 * row. It must never contain a secret, and it must be enough on its own: the role's config may
 * have changed or gone by the time the lease is revoked.
 */
export type RevokeHandle = { [key: string]: JsonValue };

/** Runs tasks at most `limit` at a time. */
export interface Limiter {
  readonly limit: number;
  run<T>(task: () => Promise<T>): Promise<T>;
}

/** Values registered here are scrubbed from any error the engine call throws. */
export interface SecretSink {
  add(secret: string): void;
}

export interface EngineContext {
  mount: string;
  log: Logger;
  /** Upper bound for one engine call; engines should make their own client timeouts match it. */
  timeoutMs: number;
}

export interface PlanRequest<Role> {
  mount: string;
  roleName: string;
  role: Role;
  leaseId: string;
  /** The lease's TTL, already capped by the role's max_ttl. */
  ttlSeconds: number;
  /** The request's own fields besides `ttl` (e.g. AWS's `role_arn`), unvalidated. */
  params: Record<string, unknown>;
  /** Which path asked: Vault's `creds`, or `sts` where an engine serves it. */
  path: string;
}

export interface IssueRequest<Role> {
  roleName: string;
  role: Role;
  handle: RevokeHandle;
  expiresAt: Date;
  secrets: SecretSink;
}

export interface IssueResponse {
  /** Returned to the caller once, under the envelope's `data`; never stored or logged. */
  data: Record<string, JsonValue>;
}

export interface RenewRequest<Role> {
  role: Role;
  handle: RevokeHandle;
  expiresAt: Date;
}

export interface RevokeRequest {
  handle: RevokeHandle;
  /** When the lease expires (or expired): a credential that dies on its own needs nothing after it. */
  expiresAt: Date;
}

/** Where `revokeMany` reports each request's outcome as soon as it is final. */
export interface RevokeProgress {
  /**
   * Request `index` (into `reqs`) is finished: `null` once its credential is fully revoked, with
   * nothing left for a later step of the same call to do for it; else why it failed. At most once
   * per index. A reported outcome is final: the returned array's entry for it is ignored.
   */
  onResult(index: number, error: Error | null): void;
}

/** What a lease's credential allows an operator to do, told truthfully in lookup and revoke. */
export interface HandleFacts {
  /** False when the target offers no way to end the credential before it expires. */
  revocableBeforeExpiry: boolean;
  note?: string;
}

/** One thing a mount needs on its target (a privilege, an object), checked, with the fix if it fails. */
export interface VerifyCheck {
  check: string;
  ok: boolean;
  detail: string;
  /** What an operator runs to fix it (SQL, a policy statement). */
  fix?: string;
}

/** One object on a target that the mount's naming says the broker made, as `listOwned` finds it. */
export interface OwnedObject {
  /** Its name on the target: what a lease's handle holds under `OwnedListing.handleKey`. */
  name: string;
  /** What `revoke()` takes to destroy it, as `plan()` would have recorded it. */
  handle: RevokeHandle;
  /** When the target made it, where the target's catalog records it (IAM's CreateDate). */
  createdAt?: Date;
}

/** What a target holds of the broker's making, and how to tell which lease owns each. */
export interface OwnedListing {
  /** The handle key whose string value is an object's name: a lease owns the object its handle names. */
  handleKey: string;
  objects: OwnedObject[];
}

/** One connected mount: the side effects on a target. Knows nothing of HTTP, auth or the lease table. */
export interface Target<Role> {
  /**
   * Pure: decides every name the issue will create. No side effect, no I/O. The place to refuse
   * a request the target would refuse (a TTL out of its bounds, an unknown option): throw an
   * InvalidRequest (src/errors.ts) and nothing is written or created.
   */
  plan(req: PlanRequest<Role>): RevokeHandle;
  /** Whether leases of this role can be renewed; by default, whether `renew` exists. */
  renewable?(role: Role): boolean;
  describe?(handle: RevokeHandle): HandleFacts;
  /**
   * Checks that the mount can do what its roles need on the target (create credentials and take
   * them back), naming each missing privilege with its fix. A target that cannot take back what it
   * issues must refuse to issue.
   */
  verify?(roles: Role[]): Promise<VerifyCheck[]>;
  /** Creates the credential described by the handle, valid until `expiresAt`. */
  issue(req: IssueRequest<Role>): Promise<IssueResponse>;
  /** Moves the credential's own expiry, where the target has one. */
  renew?(req: RenewRequest<Role>): Promise<void>;
  /**
   * Destroys the credential. Must succeed when it is already gone (revoked twice, never
   * created because the issue crashed after the plan).
   */
  revoke(req: RevokeRequest): Promise<void>;
  /**
   * Optional: revokes many credentials at once, as cheaply as the target allows (the reaper's
   * catch-up, revoke-prefix). Same contract as `revoke` for each handle; never rejects as a
   * whole: answers one entry per request, in order, null where that revocation succeeded.
   * Every target operation runs through `slots`, the bound shared by all revocations on the mount.
   *
   * Engines should report each outcome through `progress` as soon as it is final, so the broker
   * records it (and stops renewing that lease's claim) while the rest of the batch runs, and a
   * batch that times out as a whole fails only the requests not reported yet. One failure must
   * never fail the others: a step shared by the batch (a final session sweep) that fails may
   * fail only the requests it was still needed for, and those must not have been reported yet.
   */
  revokeMany?(reqs: RevokeRequest[], slots: Limiter, progress?: RevokeProgress): Promise<(Error | null)[]>;
  /**
   * Optional, for incidents: ends at once every credential of this role issued before `before`
   * (AWS: a deny on aws:TokenIssueTime), so its leases need no one-by-one revocation. Answers
   * false where the target has no such thing for this role; the leases are then revoked one by one.
   */
  revokeIssuedBefore?(role: Role, before: Date): Promise<boolean>;
  /**
   * Optional, for the orphan sweep: every object on the target the broker's naming says it made
   * (PostgreSQL roles with the mount's prefix, IAM users under its path), whether or not a lease
   * still owns it. Read from the target's own catalog; must never list what the broker could not
   * have made (the mount's admin login, a group role), since the sweep may revoke what no lease owns.
   * `roles`: the mount's roles now, for an engine whose naming depends on them (IAM's user_path).
   */
  listOwned?(roles: Role[]): Promise<OwnedListing>;
  /** The target pool's connections in this process, for metrics; an engine without a pool omits it. Must be cheap. */
  connectionPool?(): ConnectionPoolStats;
  close(): Promise<void>;
}

export interface ConnectionPoolStats {
  total: number;
  idle: number;
  /** Callers queued for a connection. */
  waiting: number;
}

/**
 * How a config field that holds a secret must be written: `value`, the whole value is a
 * `${env:NAME}` or `${file:/path}` ref; `url-password`, the password inside a URL is one.
 */
export type ConfigSecret = 'value' | 'url-password';

/**
 * Which of an engine's fields are secrets. The broker derives from this, for every engine it
 * runs, what config load refuses inline, what the audit log HMACs and what logs redact: src/
 * holds no list of engine field names.
 */
export interface EngineSecrets {
  /** Mount fields that hold a secret: refused inline in a config file, redacted from logs. */
  mount: Readonly<Record<string, ConfigSecret>>;
  /** Role fields that hold a secret: refused inline in a config file, redacted from logs. */
  role?: Readonly<Record<string, ConfigSecret>>;
  /**
   * Fields of an issued credential (`IssueResponse.data`) that are secrets: HMAC'd in the audit
   * log even where a field of the same name is kept plain for another engine, redacted from logs.
   */
  credential: readonly string[];
  /**
   * Fields of an issued credential an operator searches the audit log for (a username, an access
   * key id): kept plain there. Every other string of a credential is HMAC'd.
   */
  plain?: readonly string[];
}

/** An issued credential as a client receives it: Vault's envelope. */
export interface CredentialEnvelope {
  lease_id: string;
  lease_duration: number;
  renewable: boolean;
  data: Record<string, unknown>;
}

export interface FormatOptions {
  /** The profile name where a format has one (AWS's shared credentials file). */
  profile?: string;
  now?: Date;
}

/** How an engine's credential is written by the CLI and the agent. */
export interface CredentialFormats {
  /**
   * `env` output (and `exec`): the environment variable each credential field goes to, as the
   * target's own clients read them (libpq's PGUSER, the AWS SDK's AWS_ACCESS_KEY_ID). A field
   * not named here is upper-cased.
   */
  env: Readonly<Record<string, string>>;
  /**
   * Variables made from the credential as a whole, written after the fields in `env` output
   * (PostgreSQL's DATABASE_URL, which most frameworks read).
   */
  envDerived?: (data: Record<string, unknown>) => Readonly<Record<string, string>>;
  /**
   * Formats only this engine's credential can be written in (`pgpass`, `aws-credentials`), by
   * name. Each throws an Error saying what it needs when the credential lacks it.
   */
  files?: Readonly<Record<string, (credential: CredentialEnvelope, opts: FormatOptions) => string>>;
}

/** The broker's own part of a role, in seconds, as `describeRole` receives it. */
export interface RoleTtls {
  defaultTtl: number;
  maxTtl: number;
}

/**
 * How a mount of this engine shows itself to Vault clients: `GET sys/mounts` and
 * `GET <mount>/roles/<name>`. Whatever it answers is shown to any caller allowed to read it, so
 * it must never contain a secret (no password, no connection URL, no key).
 */
export interface EngineDiscovery<Mount, Role> {
  /** Vault's name for this kind of engine (`database`, `aws`), so scripts that look for it find the mount. */
  vaultType: string;
  /** The mount's `options` in sys/mounts (Vault's plugin_name, …). */
  mountOptions?(mount: Mount): Record<string, JsonValue>;
  /** The role's config in the shape Vault's engine of `vaultType` reads it, with the broker's TTLs. */
  describeRole(role: Role, ttls: RoleTtls, mountName: string): Record<string, JsonValue>;
}

export interface Engine<Mount = unknown, Role = unknown> {
  type: string;
  /** Validated when the config loads: a bad mount fails at start, naming the key. */
  mountSchema: z.ZodType<Mount>;
  roleSchema: z.ZodType<Role>;
  secrets: EngineSecrets;
  /**
   * Paths besides `creds` this engine issues on, e.g. AWS's `sts` (Vault's `/v1/aws/sts/<role>`):
   * routes and lease ids accept them. Each is a lower-case word.
   */
  paths?: readonly string[];
  formats?: CredentialFormats;
  /** How its mounts and roles are shown to Vault clients; without it, the engine's type and the TTLs only. */
  discovery?: EngineDiscovery<Mount, Role>;
  /** Opens pools/clients. A target that is down must not fail the broker's start. */
  connect(mount: Mount, ctx: EngineContext): Promise<Target<Role>>;
}

/** The engines a broker runs, by type name (the mounts' `type`). The full one is engines/index.ts. */
export type EngineRegistry = Readonly<Record<string, Engine<unknown, unknown>>>;
