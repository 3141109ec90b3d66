import type { StoreDb } from '../store/query.js';
import { storeQuery } from '../store/query.js';

/**
 * The reaper's pause switch in the store (credbroker_reaper_pause), for the day a store is
 * restored from a backup: its expired and stale pending rows may be live jobs' credentials, and
 * mass revocation would cut them off. The claim query reads the switch itself (claimDue), so
 * every replica honours it at its next claim; this module only sets and reports it.
 */
export interface ReaperPauseStatus {
  paused: boolean;
  since: Date | null;
  /** Who paused it, as `<auth mount>/<name>` (`token/root` for the root token). */
  pausedBy: string | null;
  reason: string | null;
  /** Expiries and stale pending leases due now: what a paused reaper is holding back. */
  dueQueued: number;
}

/** Pauses the reaper on every replica; pausing again keeps the first pause's time, updates who and why. */
export async function pauseReaper(db: StoreDb, by: string, reason: string | null): Promise<ReaperPauseStatus> {
  await storeQuery(db, {
    name: 'credbroker.pause_reaper',
    text: `UPDATE credbroker_reaper_pause
          SET paused = true, since = CASE WHEN paused THEN since ELSE now() END, paused_by = $1, reason = $2`,
    values: [by, reason],
  });
  return reaperPauseStatus(db);
}

/** Resumes reaping on every replica: whatever queued is claimed at each one's next tick. */
export async function resumeReaper(db: StoreDb): Promise<ReaperPauseStatus> {
  await storeQuery(db, {
    name: 'credbroker.resume_reaper',
    text: `UPDATE credbroker_reaper_pause SET paused = false, since = NULL, paused_by = NULL, reason = NULL`,
    values: [],
  });
  return reaperPauseStatus(db);
}

/** Whether the reaper is paused: one single-row read, cheap enough for every health probe. */
export async function isReaperPaused(db: StoreDb): Promise<boolean> {
  const { rows } = await storeQuery<{ paused: boolean }>(db, {
    name: 'credbroker.reaper_paused',
    text: 'SELECT paused FROM credbroker_reaper_pause',
    values: [],
  });
  return rows[0]?.paused ?? false;
}

/** The switch, and how many expiries and stale pending leases are due (the index on next_attempt_at). */
export async function reaperPauseStatus(db: StoreDb): Promise<ReaperPauseStatus> {
  const { rows } = await storeQuery<{
    paused: boolean;
    since: Date | null;
    paused_by: string | null;
    reason: string | null;
    due: number;
  }>(db, {
    name: 'credbroker.reaper_pause_status',
    text: `SELECT p.paused, p.since, p.paused_by, p.reason,
                (SELECT count(*)::int FROM credbroker_leases
                  WHERE next_attempt_at <= now() AND state IN ('active', 'pending')) AS due
           FROM credbroker_reaper_pause p`,
    values: [],
  });
  const row = rows[0]!;
  return { paused: row.paused, since: row.since, pausedBy: row.paused_by, reason: row.reason, dueQueued: row.due };
}

/** The switch bound to the store, as the API and health use it. */
export interface ReaperPauseControl {
  pause(by: string, reason: string | null): Promise<ReaperPauseStatus>;
  resume(): Promise<ReaperPauseStatus>;
  status(): Promise<ReaperPauseStatus>;
  isPaused(): Promise<boolean>;
}

export function reaperPauseControl(db: StoreDb): ReaperPauseControl {
  return {
    pause: (by, reason) => pauseReaper(db, by, reason),
    resume: () => resumeReaper(db),
    status: () => reaperPauseStatus(db),
    isPaused: () => isReaperPaused(db),
  };
}
