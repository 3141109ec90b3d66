import type { Logger } from 'pino';
import { formatIssues } from './config/load.js';
import { NAME_PATTERN, NAME_RULE, roleCommonSchema, type BrokerConfig, type RoleCommon } from './config/schema.js';
import { engineFor } from './engines.js';
import { ConfigError } from './errors.js';
import { GuardedTarget } from './leases/guarded-target.js';
import { Semaphore } from './semaphore.js';

export interface MountRole {
  name: string;
  common: RoleCommon;
  /** The engine's own role config, validated by its roleSchema. */
  config: unknown;
}

export interface Mount {
  name: string;
  type: string;
  target: GuardedTarget<unknown>;
  roles: Map<string, MountRole>;
  /** Bounds revocations on this mount in this process (reaper and revoke-prefix together). */
  revokeSlots: Semaphore;
  /** Request paths that issue leases: `creds`, plus any the engine adds. */
  paths: readonly string[];
}

interface ValidatedMount {
  name: string;
  type: string;
  config: unknown;
  roles: Map<string, MountRole>;
}

/** Checks every mount and role against its engine's schemas; fails naming the key. No I/O. */
export function validateMounts(config: BrokerConfig): ValidatedMount[] {
  return Object.entries(config.mounts).map(([name, raw]) => {
    const { type, roles: rawRoles, ...mountConfig } = raw;
    const engine = engineFor(type);
    if (!engine) throw new ConfigError(`mounts.${name}.type: unknown engine "${type}"`);
    const parsed = engine.mountSchema.safeParse(mountConfig);
    if (!parsed.success) throw new ConfigError(formatIssues(parsed.error.issues, ['mounts', name]));
    const roles = new Map<string, MountRole>();
    for (const [roleName, rawRole] of Object.entries(rawRoles)) {
      const { default_ttl, max_ttl, max_active_leases, max_active_leases_per_identity, ...engineRole } = rawRole;
      const path = ['mounts', name, 'roles', roleName];
      if (!NAME_PATTERN.test(roleName)) throw new ConfigError(`${path.join('.')}: a role name ${NAME_RULE}`);
      const common = roleCommonSchema.safeParse({ default_ttl, max_ttl, max_active_leases, max_active_leases_per_identity });
      if (!common.success) throw new ConfigError(formatIssues(common.error.issues, path));
      if (common.data.default_ttl > common.data.max_ttl) throw new ConfigError(`${path.join('.')}.default_ttl: must not exceed max_ttl`);
      const role = engine.roleSchema.safeParse(engineRole);
      if (!role.success) throw new ConfigError(formatIssues(role.error.issues, path));
      roles.set(roleName, { name: roleName, common: common.data, config: role.data });
    }
    return { name, type, config: parsed.data, roles };
  });
}

/** Connected mounts by name. */
export class MountRegistry {
  private constructor(private readonly mounts: Map<string, Mount>) {}

  static async connect(config: BrokerConfig, log: Logger): Promise<MountRegistry> {
    const timeoutMs = config.engine_timeout * 1000;
    const mounts = new Map<string, Mount>();
    for (const m of validateMounts(config)) {
      const target = await engineFor(m.type)!.connect(m.config, { mount: m.name, log, timeoutMs });
      const guarded = new GuardedTarget(m.name, target, timeoutMs);
      // Told at start, without holding it up: a target that is down must not fail the broker.
      void guarded.verify([...m.roles.values()].map((r) => r.config)).then(
        (checks) => {
          for (const c of checks.filter((c) => !c.ok)) log.error({ mount: m.name, check: c.check, fix: c.fix }, `mount ${m.name}: ${c.detail}`);
        },
        () => undefined,
      );
      mounts.set(m.name, {
        name: m.name,
        type: m.type,
        target: guarded,
        roles: m.roles,
        revokeSlots: new Semaphore(config.reaper.concurrency),
        paths: ['creds', ...(engineFor(m.type)!.paths ?? [])],
      });
    }
    return new MountRegistry(mounts);
  }

  get(name: string): Mount | undefined {
    return this.mounts.get(name);
  }

  names(): string[] {
    return [...this.mounts.keys()];
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.mounts.values()].map((m) => m.target.close()));
  }
}
