import { z } from 'zod';
import { parseDurationSeconds } from '../duration.js';

/** What a duration may be written as: whole seconds, or a Go-style string ("90s", "1h30m"). */
export const durationInput = z.union([z.number(), z.string()]);

/** A zod transform from `durationInput` to whole seconds; a bad value is an issue naming `field`. */
export const toSeconds =
  (field: string) =>
  (value: number | string, ctx: z.RefinementCtx): number => {
    try {
      return parseDurationSeconds(value, field);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  };

/** A duration parsed to whole seconds, with `field` named in its error. */
export const durationSchema = (field: string) => durationInput.transform(toSeconds(field));

/** A duration in config: seconds or "90s"/"1h"; parsed to whole seconds. */
export const durationSeconds = durationSchema('duration');
