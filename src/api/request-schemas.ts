import { z } from 'zod';
import { durationInput, toSeconds } from '../config/duration-schema.js';
import { InvalidRequest } from '../errors.js';
import { formatIssues } from '../config/load.js';

/** A duration in seconds or Go's form ("1h"); null, absent or "" mean "the role's default", as clients send them. */
const seconds = (field: string) =>
  durationInput
    .nullish()
    .transform((v, ctx) => (v === undefined || v === null || v === '' ? undefined : toSeconds(field)(v, ctx)));

const leaseId = z.string({ error: 'lease_id must be specified' }).max(300, 'lease_id is too long');

export const credsRequest = z.object({ ttl: seconds('ttl') }).passthrough();
export const leaseRequest = z.object({ lease_id: leaseId.optional() }).passthrough();
export const issuedBeforeRequest = z.object({
  issued_before: z.iso
    .datetime({ offset: true, error: 'issued_before must be an RFC 3339 time, e.g. 2026-11-23T12:00:00Z' })
    .transform((s) => new Date(s))
    .optional(),
});
export const renewRequest = z.object({ lease_id: leaseId.optional(), increment: seconds('increment') }).passthrough();

/**
 * Vault's health overrides (`?activecode=…`). Only codes of a real answer are accepted: a 1xx
 * would make the broker send an interim response (101 Switching Protocols) to anyone, unauthenticated.
 */
const statusCode = (name: string) =>
  z
    .string({ error: 'must be given once' })
    .regex(/^\d{3}$/, 'must be an HTTP status code from 200 to 599')
    .transform(Number)
    .refine((n) => n >= 200 && n <= 599, `${name} must be an HTTP status code from 200 to 599`)
    .optional();
const HEALTH_CODES = [
  'activecode',
  'standbycode',
  'drsecondarycode',
  'haunhealthycode',
  'performancestandbycode',
  'removedcode',
  'sealedcode',
  'uninitcode',
] as const;
export const healthQuery = z
  .object(
    Object.fromEntries(HEALTH_CODES.map((name) => [name, statusCode(name)])) as Record<
      (typeof HEALTH_CODES)[number],
      ReturnType<typeof statusCode>
    >,
  )
  .passthrough();

/** Parses a request body at the edge; a mismatch is a 400 naming the field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const input = body === undefined || body === null ? {} : body;
  if (typeof input !== 'object' || Array.isArray(input))
    throw new InvalidRequest('the request body must be a JSON object');
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new InvalidRequest(issue.code === 'custom' ? issue.message : formatIssues([issue]));
  }
  return result.data;
}
