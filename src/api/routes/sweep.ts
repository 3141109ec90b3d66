import { z } from 'zod';
import type { MountSweepResult, Sweeper } from '../../sweep/sweeper.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, type Route } from './route.js';

const sweepRequest = z
  .object({
    /** Revoke what is found; without it the sweep only reports, whatever the mounts' `sweep` mode. */
    apply: z.boolean().optional(),
    mount: z.string().min(1).max(200).optional(),
  })
  .strict();

const mountData = (m: MountSweepResult) => ({
  mount: m.mount,
  found: m.found.map((f) => ({
    name: f.name,
    ...(f.firstSeen ? { first_seen: f.firstSeen.toISOString() } : {}),
    ...(f.createdAt ? { created_at: f.createdAt.toISOString() } : {}),
    ...(f.dropped !== undefined ? { dropped: f.dropped } : {}),
    ...(f.error ? { error: f.error } : {}),
  })),
  ...(m.skippedReason ? { skipped_reason: m.skippedReason } : {}),
  ...(m.error ? { error: m.error } : {}),
});

/** sys/broker/sweep: the orphan sweep now, reporting or (`apply`) dropping; sudo on the path. */
export function sweepRoutes(sweeper: Sweeper | undefined): Route[] {
  if (!sweeper) return [];
  return [
    {
      pattern: /^sys\/broker\/sweep$/,
      methods: {
        PUT: async (ctx) => {
          authzOf(ctx).require('sys/broker/sweep', ['sudo']);
          const body = parseBody(sweepRequest, ctx.req.body);
          const mounts = await sweeper.sweepOnce({ apply: body.apply ?? false, mount: body.mount });
          return { status: 200, body: envelope(ctx.requestId, { data: { mounts: mounts.map(mountData) } }) };
        },
      },
    },
  ];
}
