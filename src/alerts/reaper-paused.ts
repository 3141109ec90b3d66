import type { Clock, Detector, EmitAlert } from './alert.js';

/**
 * Fires, on its poll, while the reaper has been paused for longer than `after` seconds: expiries
 * are queueing. Deduplication repeats it once per window for as long as the pause lasts.
 * `since` is the store's clock and `now` the broker's; their skew is seconds against a threshold of minutes.
 */
export function reaperPausedDetector(
  config: { after: number; poll_interval: number },
  deps: {
    now: Clock;
    emit: EmitAlert;
    status: () => Promise<{ paused: boolean; since: Date | null; pausedBy: string | null; dueQueued: number }>;
  },
): Detector {
  return {
    name: 'reaper_paused',
    tickInterval: config.poll_interval,
    observe() {},
    async tick() {
      const status = await deps.status();
      if (!status.paused || !status.since) return;
      const now = deps.now();
      const seconds = Math.floor((now - status.since.getTime()) / 1000);
      if (seconds < config.after) return;
      deps.emit({
        detector: 'reaper_paused',
        severity: 'warning',
        subject: 'reaper',
        summary: `the reaper has been paused for ${Math.floor(seconds / 60)} min (by ${status.pausedBy ?? '?'}); ${status.dueQueued} expiries are waiting`,
        at: now,
        details: { paused_seconds: seconds, due_queued: status.dueQueued },
      });
    },
  };
}
