import type { Identity } from '../auth/identity.js';
import { grants, type Capability, type Decision, type PolicySet } from '../auth/policy.js';
import { PermissionDenied } from '../errors.js';
import type { LeaseView } from '../leases/lease-view.js';

/** The creds path a lease was issued on: `demo/creds/readonly/<id>` → `demo/creds/readonly`. */
export const leasePath = (leaseId: string) => leaseId.slice(0, leaseId.lastIndexOf('/'));

/** One request's authorization: the caller's identity against the configured policies. Deny wins. */
export class Authz {
  constructor(
    readonly identity: Identity,
    private readonly policies: PolicySet,
  ) {}

  private evaluate(path: string): Decision {
    return this.policies.evaluate(this.identity.policies, path, {
      name: this.identity.name,
      metadata: this.identity.metadata,
    });
  }

  /** The decision when any of `capabilities` is granted on `path`; PermissionDenied otherwise. */
  require(path: string, capabilities: Capability[]): Decision {
    const decision = this.evaluate(path);
    if (!grants(decision, capabilities)) throw new PermissionDenied();
    return decision;
  }

  has(path: string, capability: Capability): boolean {
    return grants(this.evaluate(path), capability);
  }

  /**
   * Any of `capabilities` on either path, and no deny on any: for a LIST, asked as `<path>` (as
   * this broker writes paths) and as Vault's `<path>/`, so policies written either way work.
   */
  requireOnAny(paths: string[], capabilities: Capability[]): void {
    const decisions = paths.map((p) => this.evaluate(p));
    const denied = decisions.some((d) => !d.allowed && d.matchedPath !== undefined);
    if (denied || !decisions.some((d) => grants(d, capabilities))) throw new PermissionDenied();
  }

  /** Vault's capabilities-self answer on `path`: sorted; ["root"] for root; ["deny"] when nothing is granted. */
  capabilitiesOn(path: string): string[] {
    if (this.identity.root) return ['root'];
    const { allowed, capabilities } = this.evaluate(path);
    return allowed && capabilities.length ? [...capabilities].sort() : ['deny'];
  }

  owns(lease: Pick<LeaseView, 'owner'>): boolean {
    return Boolean(
      lease.owner && lease.owner.name === this.identity.name && lease.owner.authMount === this.identity.authMount,
    );
  }

  /**
   * A lease operation (`sys/leases/<op>`) is checked against the lease itself: an operator with
   * sudo on the operation may act on any lease; anyone else only on a lease they hold, and only
   * with `capability` on the path it was issued on. One pipeline cannot touch its neighbour's.
   */
  /** Root, or sudo on the operation: may act on any lease, whoever holds it. */
  actsOnAnyLease(op: string): boolean {
    return this.identity.root || this.has(`sys/leases/${op}`, 'sudo');
  }

  requireLease(op: string, lease: Pick<LeaseView, 'id' | 'owner'>, capabilities: Capability[]): Decision | undefined {
    if (this.actsOnAnyLease(op)) return undefined;
    if (!this.owns(lease)) throw new PermissionDenied();
    return this.require(leasePath(lease.id), capabilities);
  }

  /** Sees every lease under a prefix (sudo or list on the lookup path); otherwise only its own. */
  seesAllUnder(prefix: string): boolean {
    return (
      this.identity.root ||
      this.has(`sys/leases/lookup/${prefix}`, 'sudo') ||
      this.has(`sys/leases/lookup/${prefix}`, 'list')
    );
  }
}
