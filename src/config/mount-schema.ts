import { z } from 'zod';
import type { EngineRegistry } from '../engines.js';
import { durationSeconds } from './duration-schema.js';
import { mountSweepSchema, type MountSweepMode } from '../sweep/sweep-config.js';

/** Names that end up in lease ids, URLs and PostgreSQL identifiers: kept boring on purpose. */
export const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
export const NAME_RULE = 'must be 1-32 characters: lower-case letters, digits, "_" or "-", starting with a letter';

export const roleCommonSchema = z.object({
  default_ttl: durationSeconds.default(3600),
  max_ttl: durationSeconds.default(86400),
  /** Most live leases of this role at once, counted in the store so every replica agrees. */
  max_active_leases: z.number().int().min(1).optional(),
  /** Most live leases of this role one identity may hold at once. */
  max_active_leases_per_identity: z.number().int().min(1).optional(),
});
export type RoleCommon = z.infer<typeof roleCommonSchema>;

const ROLE_COMMON_KEYS = roleCommonSchema.keyof().options;

const mountCommonSchema = z
  .object({
    type: z.string(),
    roles: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
    /** What the periodic orphan sweep does on this mount (any engine): report, or drop. */
    sweep: mountSweepSchema,
  })
  .passthrough();

/**
 * A validated role: the broker's fields (TTLs, quotas) and the engine's own, each parsed by its
 * schema. Flat as in the file, so a validated config parses again to itself (tests and fixture
 * processes hand one around as JSON).
 */
export type RoleConfig = RoleCommon & Record<string, unknown>;

/** A validated mount: its type, its roles, and its engine's own fields as the engine's mountSchema parsed them. */
export interface MountConfig {
  type: string;
  roles: Record<string, RoleConfig>;
  sweep: MountSweepMode;
  [engineField: string]: unknown;
}

/** The engine's part of a validated mount: what its `connect` receives. */
export function engineMountConfig(mount: MountConfig): Record<string, unknown> {
  const { type: _type, roles: _roles, sweep: _sweep, ...config } = mount;
  return config;
}

/** A validated role split into the broker's fields and the engine's (what its target receives). */
export function splitRole(role: RoleConfig): { common: RoleCommon; config: Record<string, unknown> } {
  const common: Record<string, unknown> = {};
  const config: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(role))
    ((ROLE_COMMON_KEYS as readonly string[]).includes(key) ? common : config)[key] = value;
  return { common: common as RoleCommon, config };
}

type Issues = z.core.$ZodIssue[];
/** Issues of a nested parse, re-rooted under `path`. */
const under = (path: (string | number)[], issues: Issues) =>
  issues.map((issue) => ({ ...issue, path: [...path, ...issue.path] }));

/** One mount's issues (the first problem found, as a person fixing the file reads them), or its validated form. */
function validateMount(
  engines: EngineRegistry,
  name: string,
  raw: unknown,
): { issues: Issues } | { mount: MountConfig } {
  if (!NAME_PATTERN.test(name))
    return { issues: [{ code: 'custom', path: [], message: `a mount name ${NAME_RULE}`, input: name }] };
  if (name === 'sys')
    return {
      issues: [{ code: 'custom', path: [], message: '"sys" is reserved for the broker\'s own API', input: name }],
    };
  const base = mountCommonSchema.safeParse(raw);
  if (!base.success) return { issues: base.error.issues };
  const { type, roles: rawRoles, sweep, ...mountFields } = base.data;
  const engine = Object.hasOwn(engines, type) ? engines[type] : undefined;
  if (!engine)
    return { issues: [{ code: 'custom', path: ['type'], message: `unknown engine "${type}"`, input: type }] };
  const parsed = engine.mountSchema.safeParse(mountFields);
  if (!parsed.success) return { issues: parsed.error.issues };
  const roles: Record<string, RoleConfig> = {};
  for (const [roleName, rawRole] of Object.entries(rawRoles)) {
    const path = ['roles', roleName];
    if (!NAME_PATTERN.test(roleName))
      return { issues: [{ code: 'custom', path, message: `a role name ${NAME_RULE}`, input: roleName }] };
    const { common: rawCommon, config: rawEngineRole } = splitRole(rawRole as RoleConfig);
    const common = roleCommonSchema.safeParse(rawCommon);
    if (!common.success) return { issues: under(path, common.error.issues) };
    if (common.data.default_ttl > common.data.max_ttl)
      return {
        issues: [
          { code: 'custom', path: [...path, 'default_ttl'], message: 'must not exceed max_ttl', input: rawCommon },
        ],
      };
    const role = engine.roleSchema.safeParse(rawEngineRole);
    if (!role.success) return { issues: under(path, role.error.issues) };
    roles[roleName] = { ...common.data, ...(role.data as Record<string, unknown>) };
  }
  return { mount: { type, ...(parsed.data as Record<string, unknown>), roles, sweep } };
}

/** `mounts`: each mount and each of its roles validated by its engine's schemas, from `engines`. */
export function mountsSchemaFor(engines: EngineRegistry) {
  return z
    .record(z.string(), z.unknown())
    .default({})
    .transform((raw, ctx) => {
      const mounts: Record<string, MountConfig> = {};
      for (const [name, value] of Object.entries(raw)) {
        const result = validateMount(engines, name, value);
        if ('mount' in result) mounts[name] = result.mount;
        else for (const issue of under([name], result.issues)) ctx.addIssue(issue as z.core.$ZodRawIssue);
      }
      return mounts;
    });
}
