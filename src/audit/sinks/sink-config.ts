import { z } from 'zod';
import { FACILITIES, type Facility } from './syslog-format.js';

const MS_PER_UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A sink's duration: whole seconds (`2`) or `"250ms"`, `"2s"`, `"1m"`; parsed to milliseconds (at least 1). */
const durationMs = (fallback: string) =>
  z
    .union([z.number().int().positive(), z.string()])
    .default(fallback)
    .transform((value, ctx) => {
      if (typeof value === 'number') return value * 1000;
      const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim());
      const ms = match ? Math.round(Number(match[1]) * MS_PER_UNIT[match[2]!]!) : 0;
      if (ms < 1 || ms > 3_600_000) {
        ctx.addIssue({ code: 'custom', message: `not a duration between 1ms and 1h: use e.g. "250ms" or "2s"` });
        return z.NEVER;
      }
      return ms;
    });

const buffer = z.number().int().positive().max(1_000_000).default(10_000);

/** `host:port`, or `[v6]:port`. */
const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'must be host:port')
  .transform((value) => {
    const at = value.lastIndexOf(':');
    return { host: value.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(value.slice(at + 1)) };
  })
  .refine((a) => a.port > 0 && a.port < 65536, 'port must be 1..65535');

/** TLS for TCP syslog (RFC 5425 framing is the same octet counting); without ca_file, the system's CAs. */
const syslogTlsSchema = z
  .object({
    ca_file: z.string().min(1).optional(),
    /** A client certificate, for receivers that ask for one. */
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    /** The name the receiver's certificate must carry, when it is not the address's host. */
    server_name: z.string().min(1).optional(),
  })
  .strict()
  .refine((t) => (t.cert_file === undefined) === (t.key_file === undefined), {
    message: 'cert_file and key_file go together',
  });

export const syslogSinkSchema = z
  .object({
    address,
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    tls: syslogTlsSchema.optional(),
    facility: z.enum(Object.keys(FACILITIES) as [Facility, ...Facility[]]).default('auth'),
    app_name: z.string().min(1).max(48).default('credbroker'),
    timeout: durationMs('2s'),
    buffer,
  })
  .strict()
  .refine((s) => !(s.tls && s.protocol === 'udp'), { message: 'tls needs protocol tcp', path: ['tls'] });

export const webhookSinkSchema = z
  .object({
    url: z
      .string()
      .url()
      .refine((u) => /^https?:\/\//i.test(u), 'must be an http or https URL'),
    /** Values are secrets (an HEC token, a bearer token): in a config file, ${env:} or ${file:} refs. */
    headers: z.record(z.string(), z.string()).optional(),
    batch_size: z.number().int().positive().max(10_000).default(100),
    flush_interval: durationMs('1s'),
    timeout: durationMs('5s'),
    buffer,
  })
  .strict();

/** One sink or a list of them. */
export const oneOrMany = <T extends z.ZodTypeAny>(schema: T) =>
  z.union([schema, z.array(schema).min(1)]).transform((v): z.output<T>[] => (Array.isArray(v) ? v : [v]));

export type SyslogSinkConfig = z.output<typeof syslogSinkSchema>;
export type WebhookSinkConfig = z.output<typeof webhookSinkSchema>;
