import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import type { Sweeper } from './sweeper.js';

/**
 * Runs the sweep on its schedule in this replica, each mount as its `sweep` mode says. Every
 * replica schedules it; the per-mount lock lets one sweep a mount at a time, the others skip it.
 * Never throws: a failed run is logged and the next one tries again.
 */
export function scheduleSweep(sweeper: Sweeper, schedule: string, log: Logger): ScheduledTask {
  const run = () =>
    sweeper.sweepOnce({ apply: 'configured' }).then(
      (mounts) => {
        const found = mounts.reduce((n, m) => n + m.found.length, 0);
        const dropped = mounts.reduce((n, m) => n + m.found.filter((f) => f.dropped).length, 0);
        if (found > 0) log.warn({ found, dropped }, 'orphan sweep found objects no live lease owns');
      },
      (err) => log.warn({ err: messageOf(err) }, 'orphan sweep failed; the next run retries'),
    );
  return cron.schedule(schedule, run, { name: 'orphan-sweep', noOverlap: true });
}
