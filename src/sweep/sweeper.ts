import type pg from 'pg';
import type { Logger } from 'pino';
import type { AuditRecord } from '../audit/record.js';
import { UnknownMount, messageOf } from '../errors.js';
import type { Mount, MountRegistry } from '../mounts.js';
import type { MountSweepMode } from './sweep-config.js';
import { forgetSighting, namesOwnedByLiveLeases, recordSightings, withMountSweepLock } from './sweep-store.js';

/** One object no live lease owns, past the grace. */
export interface SweepFinding {
  name: string;
  /** When a sweep first saw it unowned (where the target records no creation time). */
  firstSeen?: Date;
  createdAt?: Date;
  /** Set when the run was to drop it: true once revoked through the engine. */
  dropped?: boolean;
  /** Why the drop failed (sanitized by the engine wrapper). */
  error?: string;
}

export interface MountSweepResult {
  mount: string;
  found: SweepFinding[];
  /** Why the mount was not swept: its engine cannot list its objects, or another replica is on it. */
  skippedReason?: string;
  /** Why the sweep of this mount failed (its target or the store): not swept, and worth an alert. */
  error?: string;
}

export interface SweepRequest {
  /** Drop what is found: true or false for every mount, or `configured`, each mount's `sweep` mode. */
  apply: boolean | 'configured';
  /** Only this mount. */
  mount?: string;
}

export interface SweepDeps {
  store: pg.Pool;
  mounts: MountRegistry;
  /** Each mount's `sweep` setting. */
  modeOf: (mount: string) => MountSweepMode;
  graceSeconds: number;
  audit: (event: Omit<AuditRecord, 'type' | 'time'> & { operation: string }) => Promise<void>;
  metrics?: { sweepFound(mount: string, count: number): void; sweepDropped(mount: string): void };
  log: Logger;
}

/**
 * The orphan sweep: on each mount whose engine lists what it made, the objects no live lease owns
 * and older than the grace are reported and, when asked, revoked through the engine (its whole
 * revocation order). The lease rows are read after the target is listed: an issue writes its
 * pending row before it creates anything, so whatever the listing saw has its row by then.
 */
export class Sweeper {
  constructor(private readonly deps: SweepDeps) {}

  async sweepOnce(req: SweepRequest): Promise<MountSweepResult[]> {
    const { mounts } = this.deps;
    let selected: Mount[];
    if (req.mount !== undefined) {
      const mount = mounts.get(req.mount);
      if (!mount) throw new UnknownMount(req.mount, mounts.names());
      selected = [mount];
    } else selected = mounts.all();
    const results: MountSweepResult[] = [];
    for (const mount of selected) {
      const apply = req.apply === 'configured' ? this.deps.modeOf(mount.name) === 'drop' : req.apply;
      results.push(await this.sweepMount(mount, apply));
    }
    return results;
  }

  private async sweepMount(mount: Mount, apply: boolean): Promise<MountSweepResult> {
    const skipped = (reason: string): MountSweepResult => ({ mount: mount.name, found: [], skippedReason: reason });
    try {
      const result = await withMountSweepLock(this.deps.store, mount.name, () => this.sweepLocked(mount, apply));
      return result ?? skipped('another replica is sweeping this mount');
    } catch (err) {
      const reason = messageOf(err);
      this.deps.log.warn({ mount: mount.name, err: reason }, 'orphan sweep failed on this mount');
      await this.deps.audit({
        request_id: `sweep:${mount.name}`,
        operation: 'sweep-failed',
        outcome: 'error',
        error: reason,
        data: { mount: mount.name },
      });
      return { mount: mount.name, found: [], error: reason };
    }
  }

  private async sweepLocked(mount: Mount, apply: boolean): Promise<MountSweepResult> {
    const listing = await mount.target.listOwned([...mount.roles.values()].map((r) => r.config));
    if (!listing)
      return { mount: mount.name, found: [], skippedReason: `engine "${mount.type}" cannot list its objects` };
    // After the listing, never before: see the class comment.
    const owned = await namesOwnedByLiveLeases(
      this.deps.store,
      listing.handleKey,
      listing.objects.map((o) => o.name),
    );
    const unowned = listing.objects.filter((o) => !owned.has(o.name));
    const sightings = await recordSightings(this.deps.store, mount.name, unowned, this.deps.graceSeconds);
    const due = new Set(sightings.filter((s) => s.due).map((s) => s.name));
    const firstSeen = new Map(sightings.map((s) => [s.name, s.firstSeen]));
    const orphans = unowned.filter((o) => due.has(o.name));
    this.deps.metrics?.sweepFound(mount.name, orphans.length);

    const found: SweepFinding[] = [];
    for (const orphan of orphans) {
      const finding: SweepFinding = orphan.createdAt
        ? { name: orphan.name, createdAt: orphan.createdAt }
        : { name: orphan.name, firstSeen: firstSeen.get(orphan.name) };
      await this.audit('sweep-found', mount.name, finding);
      found.push(finding);
    }
    if (!apply) return { mount: mount.name, found };

    await Promise.all(
      orphans.map((orphan, i) =>
        mount.revokeSlots.run(async () => {
          const finding = found[i]!;
          try {
            await mount.target.revoke({ handle: orphan.handle, expiresAt: new Date() });
            finding.dropped = true;
            await forgetSighting(this.deps.store, mount.name, orphan.name);
            this.deps.metrics?.sweepDropped(mount.name);
            await this.audit('sweep-dropped', mount.name, finding);
          } catch (err) {
            finding.dropped = false;
            finding.error = messageOf(err);
            await this.audit('sweep-failed', mount.name, finding);
          }
        }),
      ),
    );
    return { mount: mount.name, found };
  }

  private audit(operation: string, mount: string, finding: SweepFinding): Promise<void> {
    return this.deps.audit({
      request_id: `sweep:${mount}`,
      operation,
      outcome: finding.error ? 'error' : 'ok',
      ...(finding.error ? { error: finding.error } : {}),
      data: {
        mount,
        object: finding.name,
        ...(finding.firstSeen ? { first_seen: finding.firstSeen.toISOString() } : {}),
        ...(finding.createdAt ? { created_at: finding.createdAt.toISOString() } : {}),
      },
    });
  }
}
