import { z } from 'zod';
import { parseDurationSeconds } from '../duration.js';

/** A duration in config: seconds or "90s"/"1h"; parsed to whole seconds. */
export const durationSeconds = z.union([z.number(), z.string()]).transform((value, ctx) => {
  try {
    return parseDurationSeconds(value, 'duration');
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});
