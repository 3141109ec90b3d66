import { readFileSync } from 'node:fs';
import { constants, hostname } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { credentialFormats } from '../cli/credential-format.js';
import { durationSchema } from '../config/duration-schema.js';
import { formatIssues, resolveRefs } from '../config/load.js';
import { compileTemplate } from './file-content.js';

/** The agent's config is wrong or unreadable: one message naming the key. */
export class AgentConfigError extends Error {
  override name = 'AgentConfigError';
}

/** What the broker accepts in an idempotency key (src/api/routes/creds.ts). */
const KEY_PART = /^[A-Za-z0-9._:-]+$/;
const absolutePath = z.string().refine(isAbsolute, { message: 'must be an absolute path' });
const id = z
  .number()
  .int()
  .min(0)
  .max(2 ** 32 - 2);

const fileSchema = z
  .object({
    path: absolutePath,
    format: z
      .string()
      .refine((f) => credentialFormats().includes(f), {
        message: `unknown format: expected one of ${credentialFormats().join(', ')}`,
      })
      .optional(),
    template: z.string().optional(),
    /** For `aws-credentials`: the profile's name. */
    profile: z
      .string()
      .regex(/^[^\]\n]+$/, 'a profile name has no "]" and no newline')
      .optional(),
    mode: z
      .string({ error: 'mode is a quoted string of octal digits, e.g. "0440" (unquoted, YAML reads 0440 as a number)' })
      .regex(/^0?[0-7]{3}$/, 'mode is a string of octal digits, e.g. "0440"')
      .default('0600')
      .transform((m) => parseInt(m, 8)),
    uid: id.optional(),
    gid: id.optional(),
  })
  .strict()
  .superRefine((file, ctx) => {
    if ((file.format === undefined) === (file.template === undefined))
      ctx.addIssue({ code: 'custom', message: 'give exactly one of format and template' });
    if (file.template !== undefined) {
      try {
        compileTemplate(file.template);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['template'], message: (err as Error).message.split('\n')[0]! });
      }
    }
  });

const onRotateSchema = z.union([
  z
    .object({
      signal: z.string().refine((s) => s.startsWith('SIG') && Object.hasOwn(constants.signals, s), {
        message: 'a signal name like SIGHUP',
      }),
      pid_file: absolutePath,
    })
    .strict(),
  z.object({ command: z.array(z.string()).min(1) }).strict(),
]);

const leaseSchema = z
  .object({
    name: z.string().regex(KEY_PART, 'a name is letters, digits and . _ : -'),
    path: z.string().regex(/^[^/\s]+\/.+[^/]$/, 'a creds path like warehouse/creds/etl-reader'),
    ttl: durationSchema('ttl').optional(),
    files: z.array(fileSchema).min(1),
    on_rotate: onRotateSchema.optional(),
  })
  .strict();

const authSchema = z.union([
  z.object({ mount: z.string().min(1), role: z.string().min(1), jwt_file: absolutePath }).strict(),
  z.object({ token_file: absolutePath }).strict(),
]);

const agentSchema = z
  .object({
    broker: z.object({ address: z.string().url().optional(), ca_file: absolutePath.optional() }).strict().default({}),
    auth: authSchema,
    pod_uid: z.string().regex(KEY_PART, 'letters, digits and . _ : -').optional(),
    state_file: absolutePath.optional(),
    health: z
      .object({ address: z.string().regex(/^[^\s:]+:\d{1,5}$/, 'host:port, e.g. 127.0.0.1:8201') })
      .strict()
      .optional(),
    leases: z.array(leaseSchema).min(1),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.leases.forEach((lease, i) => {
      if (seen.has(lease.name)) ctx.addIssue({ code: 'custom', path: ['leases', i, 'name'], message: 'used twice' });
      seen.add(lease.name);
    });
    const paths = new Set<string>();
    config.leases.forEach((lease, i) =>
      lease.files.forEach((file, j) => {
        if (paths.has(file.path))
          ctx.addIssue({ code: 'custom', path: ['leases', i, 'files', j, 'path'], message: 'written twice' });
        paths.add(file.path);
      }),
    );
  });

type ParsedConfig = z.infer<typeof agentSchema>;
export type AgentFile = ParsedConfig['leases'][number]['files'][number];
export type AgentLeaseSpec = ParsedConfig['leases'][number];
export type OnRotate = NonNullable<AgentLeaseSpec['on_rotate']>;

/** The agent's config with every default filled in. */
export interface AgentConfig extends Omit<ParsedConfig, 'pod_uid' | 'state_file'> {
  pod_uid: string;
  state_file: string;
}

/** Parses, resolves `${env:X}`/`${file:/p}` and validates an agent config; throws AgentConfigError naming the key. */
export function parseAgentConfig(text: string, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let raw: unknown;
  try {
    raw = resolveRefs(parseYaml(text), [], env);
  } catch (err) {
    throw new AgentConfigError((err as Error).message);
  }
  const result = agentSchema.safeParse(raw);
  if (!result.success) throw new AgentConfigError(formatIssues(result.error.issues));
  const config = result.data;
  const podUid = config.pod_uid ?? hostname();
  if (!KEY_PART.test(podUid)) throw new AgentConfigError(`pod_uid: "${podUid}" is not letters, digits and . _ : -`);
  return {
    ...config,
    pod_uid: podUid,
    state_file: config.state_file ?? join(dirname(config.leases[0]!.files[0]!.path), '.credbroker-agent.json'),
  };
}

export function loadAgentConfig(path: string, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AgentConfigError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseAgentConfig(text, env);
}
