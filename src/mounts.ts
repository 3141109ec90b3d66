import type { Logger } from 'pino';
import { engineMountConfig, splitRole, type RoleCommon } from './config/mount-schema.js';
import type { BrokerConfig } from './config/schema.js';
import type { EngineRegistry } from './engines.js';
import { ConfigError } from './errors.js';
import { GuardedTarget } from './leases/guarded-target.js';
import { describeMount, type MountDescription } from './mount-description.js';
import { Semaphore } from './semaphore.js';

export interface MountRole {
  name: string;
  common: RoleCommon;
  /** The engine's own role config, as its roleSchema validated it when the config loaded. */
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
  /** What sys/mounts and `<mount>/roles` show of it, never a secret. */
  description: MountDescription;
}

/** Connected mounts by name. */
export class MountRegistry {
  private constructor(private readonly mounts: Map<string, Mount>) {}

  /**
   * Connects every mount of a validated config (configSchemaFor(engines) checked each against
   * its engine's schemas), with the engines the config was validated for.
   */
  static async connect(config: BrokerConfig, engines: EngineRegistry, log: Logger): Promise<MountRegistry> {
    const timeoutMs = config.engine_timeout * 1000;
    const mounts = new Map<string, Mount>();
    // Every engine first, so a config validated for other engines fails before anything is opened.
    const planned = Object.entries(config.mounts).map(([name, mountConfig]) => {
      const engine = Object.hasOwn(engines, mountConfig.type) ? engines[mountConfig.type] : undefined;
      if (!engine) throw new ConfigError(`mounts.${name}.type: unknown engine "${mountConfig.type}"`);
      return { name, mountConfig, engine };
    });
    for (const { name, mountConfig, engine } of planned) {
      const roles = new Map<string, MountRole>(
        Object.entries(mountConfig.roles).map(([roleName, role]) => [roleName, { name: roleName, ...splitRole(role) }]),
      );
      const target = await engine.connect(engineMountConfig(mountConfig), { mount: name, log, timeoutMs });
      const guarded = new GuardedTarget(name, target, timeoutMs);
      // Told at start, without holding it up: a target that is down must not fail the broker.
      void guarded.verify([...roles.values()].map((r) => r.config)).then(
        (checks) => {
          for (const c of checks.filter((c) => !c.ok))
            log.error({ mount: name, check: c.check, fix: c.fix }, `mount ${name}: ${c.detail}`);
        },
        () => undefined,
      );
      mounts.set(name, {
        name,
        type: mountConfig.type,
        target: guarded,
        roles,
        revokeSlots: new Semaphore(config.reaper.concurrency),
        paths: ['creds', ...(engine.paths ?? [])],
        description: describeMount(name, engine, engineMountConfig(mountConfig), roles.values()),
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

  /** Every mount, in config order. */
  all(): Mount[] {
    return [...this.mounts.values()];
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.mounts.values()].map((m) => m.target.close()));
  }
}
