import { z } from 'zod';
import type { ReaperPauseControl, ReaperPauseStatus } from '../../leases/reaper-pause.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, iso, type Handler, type Route } from './route.js';

// A reason is for people reading status and the audit log; 1 KiB is plenty and bounds both.
const pauseRequest = z.object({ reason: z.string().max(1024).optional() }).strict();

const statusData = (s: ReaperPauseStatus) => ({
  paused: s.paused,
  since: iso(s.since),
  paused_by: s.pausedBy,
  reason: s.reason,
  due_queued: s.dueQueued,
});

/** sys/broker/reaper/{pause,resume,status}: sudo on the path (root has it). Every replica honours the switch. */
export function reaperRoutes(control: ReaperPauseControl): Route[] {
  const answer =
    (op: 'pause' | 'resume' | 'status'): Handler =>
    async (ctx) => {
      const authz = authzOf(ctx);
      authz.require(`sys/broker/reaper/${op}`, ['sudo']);
      let status: ReaperPauseStatus;
      if (op === 'pause') {
        const { reason } = parseBody(pauseRequest, ctx.req.body);
        status = await control.pause(`${authz.identity.authMount}/${authz.identity.name}`, reason ?? null);
      } else status = op === 'resume' ? await control.resume() : await control.status();
      return { status: 200, body: envelope(ctx.requestId, { data: statusData(status) }) };
    };
  return [
    { pattern: /^sys\/broker\/reaper\/pause$/, methods: { PUT: answer('pause') } },
    { pattern: /^sys\/broker\/reaper\/resume$/, methods: { PUT: answer('resume') } },
    { pattern: /^sys\/broker\/reaper\/status$/, methods: { GET: answer('status') } },
  ];
}
