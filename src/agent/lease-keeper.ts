import { access } from 'node:fs/promises';
import type { Broker } from '../sdk/broker.js';
import { BrokerApiError, LeaseInUseError } from '../sdk/errors.js';
import { Lease, renewDelay } from '../sdk/lease.js';
import type { AgentLog } from './agent-log.js';
import type { AgentLeaseSpec } from './config.js';
import { envelopeOf, writeLeaseFiles } from './lease-files.js';
import { runOnRotate } from './on-rotate.js';
import type { HeldLease } from './state-file.js';

/**
 * The key of a lease entry: `<pod_uid>/<name>` for the first lease, with the rotation number
 * after it for later ones (the key of a live lease cannot take a second lease, and a rotation
 * needs the new lease before the old one goes).
 */
export function idempotencyKey(podUid: string, name: string, generation: number): string {
  return generation === 0 ? `${podUid}/${name}` : `${podUid}/${name}/${generation}`;
}

interface LookedUp {
  renewable: boolean;
  expireTime: number;
  /** The lease's duration at issue (or last renewal): what to renew it by when the config names no ttl. */
  period: number;
}

/** What a keeper tells its owner: the lease it holds now (for the state file), or none. */
export type OnHeld = (name: string, held: HeldLease | undefined) => Promise<void>;

export interface KeeperOptions {
  broker: Broker;
  podUid: string;
  spec: AgentLeaseSpec;
  /** Renew, and rotate before max TTL (the sidecar); false for `--once`. */
  keep: boolean;
  log: AgentLog;
  onHeld: OnHeld;
}

const fileExists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * Holds one lease entry of the config: takes or adopts its lease, writes its files, and (when
 * keeping) renews it, rotates it before its max TTL and revokes it at the end.
 */
export class LeaseKeeper {
  #lease: Lease | undefined;
  #generation = 0;
  #rotation: NodeJS.Timeout | undefined;
  #rotating: Promise<void> | undefined;
  #stopped = false;
  readonly #opts: KeeperOptions;

  constructor(opts: KeeperOptions) {
    this.#opts = opts;
  }

  get lease(): Lease | undefined {
    return this.#lease;
  }

  /**
   * Adopts the lease of `held` when it is live and its files are all there; otherwise takes a
   * new one (revoking the one it replaces, whose credential is lost) and writes the files.
   */
  async start(held: HeldLease | undefined): Promise<void> {
    const { spec, log, broker } = this.#opts;
    if (held && held.path === spec.path) {
      this.#generation = held.generation;
      const live = await this.#lookup(held.lease_id);
      const present = (await Promise.all(spec.files.map((f) => fileExists(f.path)))).every(Boolean);
      if (live && present) {
        this.#hold(await this.#adopt(held.lease_id, live));
        log(
          `${spec.name}: adopted ${held.lease_id} from the state file (renewed to ${this.#lease!.expiresAt.toISOString()})`,
        );
        await this.#record();
        return;
      }
      if (live) {
        log(
          `${spec.name}: the files of ${held.lease_id} are missing and its credential cannot be read again: revoking it and taking a new lease`,
        );
        await broker.revokeLease(held.lease_id);
      } else log(`${spec.name}: ${held.lease_id} from the state file is no longer live: taking a new lease`);
    }
    if (held && held.path !== spec.path) {
      // The config names another path now: the old lease serves nobody.
      log(`${spec.name}: the state file's ${held.lease_id} is for ${held.path}, not ${spec.path}: revoking it`);
      await broker.revokeLease(held.lease_id).catch((err: Error) => log(`${spec.name}: ${err.message}`));
    }
    const lease = await this.#take(this.#generation);
    await this.#install(lease);
    log(`${spec.name}: leased ${lease.id} until ${lease.expiresAt.toISOString()}, wrote ${spec.files.length} file(s)`);
  }

  /** Stops renewing and rotating; with `revoke`, revokes the lease held (the credential stops working). */
  async stop(revoke: boolean): Promise<void> {
    this.#stopped = true;
    if (this.#rotation) clearTimeout(this.#rotation);
    // A rotation under way finishes first (it revokes the old lease), so no lease is left behind.
    await this.#rotating?.catch(() => undefined);
    const lease = this.#lease;
    if (!lease) return;
    lease.stopRenewing();
    if (!revoke) return;
    await lease.revoke();
    this.#opts.log(`${this.#opts.spec.name}: revoked ${lease.id}`);
    await this.#opts.onHeld(this.#opts.spec.name, undefined);
  }

  /** The lease's state, or null when it is not live (revoked, expired, unknown to this identity). */
  async #lookup(id: string): Promise<LookedUp | null> {
    let data: Record<string, unknown>;
    try {
      data = (await this.#opts.broker.request('PUT', 'sys/leases/lookup', { lease_id: id }))?.data ?? {};
    } catch (err) {
      if (err instanceof BrokerApiError && err.status < 500) return null;
      throw err;
    }
    const expireTime = Date.parse(String(data.expire_time));
    if (data.state !== 'active' || !(Number(data.ttl) > 0) || Number.isNaN(expireTime)) return null;
    const since = Date.parse(String(data.last_renewal ?? data.issue_time));
    const period = Number.isNaN(since) ? Number(data.ttl) : Math.round((expireTime - since) / 1000);
    return { renewable: data.renewable === true, expireTime, period };
  }

  /** A Lease object for a lease another process took: renewed now, then kept as the SDK keeps any lease. */
  async #adopt(id: string, live: LookedUp): Promise<Lease> {
    const { broker, spec, keep } = this.#opts;
    let duration = Math.round((live.expireTime - Date.now()) / 1000);
    if (live.renewable) {
      const increment = spec.ttl ?? live.period;
      duration = (await broker.renewLease(id, increment > 0 ? increment : undefined, live.expireTime)).leaseDuration;
    }
    // The credential is in the files already; the agent never holds it again.
    const issued = { path: spec.path, leaseId: id, leaseDuration: duration, renewable: live.renewable, data: {} };
    return new Lease(broker, issued, { autoRenew: keep });
  }

  /**
   * A new lease under this entry's key. A 409 names the live lease that holds the key already: one
   * this agent took but never wrote down (it crashed in between), so its credential is lost:
   * revoke it, and ask again.
   */
  async #take(generation: number): Promise<Lease> {
    const { broker, spec, podUid, keep, log } = this.#opts;
    const ask = () =>
      broker.lease(spec.path, {
        ...(spec.ttl !== undefined ? { ttl: spec.ttl } : {}),
        idempotencyKey: idempotencyKey(podUid, spec.name, generation),
        autoRenew: keep,
      });
    try {
      try {
        return await ask();
      } catch (err) {
        if (!(err instanceof LeaseInUseError && err.state === 'active')) throw err;
        log(
          `${spec.name}: ${err.leaseId} holds this pod's key but its credential was never written down: revoking it and leasing again`,
        );
        await broker.revokeLease(err.leaseId);
        return await ask();
      }
    } catch (err) {
      throw new Error(`cannot lease ${spec.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes the files of a new lease and records it; a lease whose files cannot be written is revoked. */
  async #install(lease: Lease): Promise<void> {
    this.#hold(lease);
    try {
      await writeLeaseFiles(this.#opts.spec.files, envelopeOf(lease));
    } catch (err) {
      this.#lease = undefined;
      await lease.revoke().catch(() => undefined);
      throw err;
    }
    await this.#record();
  }

  #hold(lease: Lease): void {
    this.#lease = lease;
    if (!this.#opts.keep) return;
    // Listened to at once: `expiring` may come on the next turn (a lease that is not renewable).
    lease.on('renewed', () => void this.#record().catch(() => undefined));
    lease.on('expiring', ({ expiresAt, reason }: { expiresAt: Date; reason: string }) => {
      if (this.#lease !== lease || this.#stopped) return;
      const delay = renewDelay(expiresAt.getTime() - Date.now());
      this.#opts.log(
        `${this.#opts.spec.name}: ${lease.id} will not be renewed again (${reason}); rotating in ${Math.round(delay / 1000)} s`,
      );
      this.#scheduleRotation(delay, 0);
    });
  }

  #scheduleRotation(delay: number, failures: number): void {
    if (this.#rotation) clearTimeout(this.#rotation);
    this.#rotation = setTimeout(() => {
      this.#rotating = this.#rotate(failures).finally(() => (this.#rotating = undefined));
    }, delay);
  }

  /** New lease, new files, the app told, the old lease revoked: in this order, so the app always has a working credential. */
  async #rotate(failures: number): Promise<void> {
    this.#rotation = undefined;
    const old = this.#lease;
    if (this.#stopped || !old) return;
    const { spec, log } = this.#opts;
    let next: Lease | undefined;
    try {
      next = await this.#take(this.#generation + 1);
      if (this.#stopped) {
        await next.revoke();
        return;
      }
      this.#generation += 1;
      await this.#install(next);
    } catch (err) {
      if (this.#stopped) return;
      // Back off from 1 s to 30 s; the files keep the old credential meanwhile.
      const delay = Math.min(30_000, 1000 * 2 ** failures);
      log(`${spec.name}: rotation failed (${(err as Error).message}); retrying in ${delay / 1000} s`);
      if (!this.#lease) this.#lease = old;
      this.#scheduleRotation(delay, failures + 1);
      return;
    }
    log(`${spec.name}: rotated ${old.id} → ${next.id}, rewrote ${spec.files.length} file(s)`);
    await runOnRotate(spec.on_rotate, log);
    try {
      await old.revoke();
      log(`${spec.name}: revoked ${old.id}`);
    } catch (err) {
      log(
        `${spec.name}: could not revoke ${old.id} (it ends at ${old.expiresAt.toISOString()}): ${(err as Error).message}`,
      );
    }
  }

  async #record(): Promise<void> {
    const lease = this.#lease;
    if (!lease) return;
    await this.#opts.onHeld(this.#opts.spec.name, {
      lease_id: lease.id,
      path: this.#opts.spec.path,
      expire_time: lease.expiresAt.toISOString(),
      files: this.#opts.spec.files.map((f) => f.path),
      generation: this.#generation,
    });
  }
}
