import { createHash } from 'node:crypto';
import type { Engine, JsonValue } from './engines.js';
import type { RoleCommon } from './config/mount-schema.js';

/** What Vault clients are shown of one mount: sys/mounts' entry and its roles. Never a secret. */
export interface MountDescription {
  /** Vault's engine type (`database` for postgres), which scripts key on. */
  vaultType: string;
  /** Stable across replicas and restarts (derived from the name), as a Vault accessor is stable. */
  accessor: string;
  uuid: string;
  options: Record<string, JsonValue>;
  /** Each role's config as `GET <mount>/roles/<name>` answers it, by name. */
  roles: ReadonlyMap<string, Record<string, JsonValue>>;
}

const digest = (text: string) => createHash('sha256').update(text).digest('hex');

/** `database_1a2b3c4d`: Vault's accessor shape, the same on every replica for the same mount name. */
export const mountAccessor = (vaultType: string, name: string) => `${vaultType}_${digest(`mount:${name}`).slice(0, 8)}`;

/** A UUID-shaped id derived from `seed`, stable where Vault's would be random once and stored. */
export function stableUuid(seed: string): string {
  const h = digest(seed);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Drops, at any depth, the fields the engine declares secret, whatever its describeRole returned. */
function withoutSecrets(value: Record<string, JsonValue>, secretKeys: Set<string>): Record<string, JsonValue> {
  const clean = (v: JsonValue): JsonValue => {
    if (Array.isArray(v)) return v.map(clean);
    if (v && typeof v === 'object')
      return Object.fromEntries(Object.entries(v).flatMap(([k, x]) => (secretKeys.has(k) ? [] : [[k, clean(x)]])));
    return v;
  };
  return clean(value) as Record<string, JsonValue>;
}

/** Describes a mount of `engine` from its validated config: computed once, at connect. */
export function describeMount(
  name: string,
  engine: Engine<unknown, unknown>,
  mountConfig: unknown,
  roles: Iterable<{ name: string; common: RoleCommon; config: unknown }>,
): MountDescription {
  const discovery = engine.discovery;
  const vaultType = discovery?.vaultType ?? engine.type;
  const secretKeys = new Set([
    ...Object.keys(engine.secrets.mount),
    ...Object.keys(engine.secrets.role ?? {}),
    ...engine.secrets.credential,
  ]);
  const described = new Map<string, Record<string, JsonValue>>();
  for (const role of roles) {
    const ttls = { defaultTtl: role.common.default_ttl, maxTtl: role.common.max_ttl };
    const shown = discovery
      ? discovery.describeRole(role.config, ttls, name)
      : { default_ttl: ttls.defaultTtl, max_ttl: ttls.maxTtl };
    described.set(role.name, withoutSecrets(shown, secretKeys));
  }
  return {
    vaultType,
    accessor: mountAccessor(vaultType, name),
    uuid: stableUuid(`mount:${name}`),
    options: withoutSecrets(discovery?.mountOptions?.(mountConfig) ?? {}, secretKeys),
    roles: described,
  };
}
