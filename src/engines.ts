import type { Logger } from 'pino';
import type { z } from 'zod';
import { postgresEngine } from '../engines/postgres/index.js';

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
}

/** One connected mount: the side effects on a target. Knows nothing of HTTP, auth or the lease table. */
export interface Target<Role> {
  /** Pure: decides every name the issue will create. No side effect, no I/O. */
  plan(req: PlanRequest<Role>): RevokeHandle;
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
   */
  revokeMany?(reqs: RevokeRequest[], slots: Limiter): Promise<(Error | null)[]>;
  close(): Promise<void>;
}

export interface Engine<Mount = unknown, Role = unknown> {
  type: string;
  /** Validated when the config loads: a bad mount fails at start, naming the key. */
  mountSchema: z.ZodType<Mount>;
  roleSchema: z.ZodType<Role>;
  /** Opens pools/clients. A target that is down must not fail the broker's start. */
  connect(mount: Mount, ctx: EngineContext): Promise<Target<Role>>;
}

/** Every engine, by type name. A new engine is one folder in engines/ plus one line here. */
export const engines = {
  postgres: postgresEngine,
} satisfies Record<string, Engine<any, any>>;

export type EngineType = keyof typeof engines;

export function engineFor(type: string): Engine<any, any> | undefined {
  return Object.hasOwn(engines, type) ? engines[type as EngineType] : undefined;
}
