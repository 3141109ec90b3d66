import type { ConfigSecret, EngineRegistry } from '../engines.js';
import { ConfigError } from '../errors.js';

const isRef = (s: unknown) => typeof s === 'string' && /^\$\{(env|file):[^}]+\}$/.test(s);
const asRecord = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

/** Whether a secret field is written inline: any value but a ref, or a URL whose password is not a ref. */
function inlineSecret(value: unknown, kind: ConfigSecret): boolean {
  if (kind === 'value') return value !== undefined && !isRef(value);
  if (typeof value !== 'string' || isRef(value)) return false;
  const password = /^[a-z]+:\/\/[^:/@]*:([^@]*)@/i.exec(value)?.[1];
  return Boolean(password) && !isRef(password);
}

function refuse(key: string, kind: ConfigSecret): never {
  throw new ConfigError(
    kind === 'value'
      ? `${key}: write it as \${env:NAME} or \${file:/path}, not inline`
      : `${key}: the password must be a \${env:NAME} or \${file:/path} ref, not inline`,
  );
}

/**
 * Secrets may only be written as refs in a config file, so the file itself is never a secret.
 * The broker's own secret fields are known here; each engine declares its mount's and roles'
 * (`secrets.mount`, `secrets.role`). Runs on the file as written, before refs are resolved.
 */
export function refuseInlineSecrets(raw: Record<string, unknown>, engines: EngineRegistry): void {
  const own: [string, unknown, ConfigSecret][] = [
    ['root_token', raw.root_token, 'value'],
    ['audit.hmac_key', asRecord(raw.audit).hmac_key, 'value'],
    ['alerts.webhook.routing_key', asRecord(asRecord(raw.alerts).webhook).routing_key, 'value'],
    ['store.url', asRecord(raw.store).url, 'url-password'],
  ];
  for (const [key, value, kind] of own) if (inlineSecret(value, kind)) refuse(key, kind);
  for (const [name, rawMount] of Object.entries(asRecord(raw.mounts))) {
    const mount = asRecord(rawMount);
    const type = mount.type;
    // An unknown type is refused, by name, when the mounts are validated.
    const engine = typeof type === 'string' && Object.hasOwn(engines, type) ? engines[type] : undefined;
    if (!engine) continue;
    for (const [field, kind] of Object.entries(engine.secrets.mount)) {
      if (inlineSecret(mount[field], kind)) refuse(`mounts.${name}.${field}`, kind);
    }
    for (const [roleName, role] of Object.entries(asRecord(mount.roles))) {
      for (const [field, kind] of Object.entries(engine.secrets.role ?? {})) {
        if (inlineSecret(asRecord(role)[field], kind)) refuse(`mounts.${name}.roles.${roleName}.${field}`, kind);
      }
    }
  }
}
