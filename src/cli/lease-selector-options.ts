import { Option, type Command } from 'commander';
import { parseInstant } from '../audit/audit-query.js';
import { leasePrefix } from './options.js';

/** The selector flags `revoke`, `leases list` and `leases retry` share. */
export interface SelectorFlags {
  identity?: string;
  meta?: string[];
  authMount?: string;
  accessor?: string;
  mount?: string[];
  role?: string[];
  engine?: string[];
  prefix?: string;
  issuedBefore?: string;
  issuedAfter?: string;
  state?: string[];
  all?: boolean;
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

function keyValue(value: string, previous: string[] | undefined): string[] {
  if (value.indexOf('=') <= 0)
    throw new Error(`--meta takes key=value, e.g. service_account_namespace=etl; got "${value}"`);
  return collect(value, previous);
}

export const SELECTOR_HELP = `
Selecting leases: every flag given must match (AND); a repeated flag matches any of its values.
  --identity system:serviceaccount:etl:loader     one identity (its name as recorded on login)
  --meta service_account_namespace=etl            identity metadata (repeat for more keys)
  --auth-mount k8s  --accessor <token accessor>   how it logged in, one token
  --mount db --role reader --engine postgres      where the credential lives
  --issued-before 2026-01-31T02:00:00Z            RFC 3339, "now", or a duration ago (1h, 30m)
  --state active                                  pending, active, revoking, irrevocable (default: all four)`;

export function addSelectorOptions(command: Command, opts: { prefix?: boolean } = {}): Command {
  command
    .option('--identity <name>', 'leases of one identity (the name recorded at login)')
    .option('--meta <key=value>', 'identity metadata that must match (repeatable)', keyValue)
    .option('--auth-mount <name>', 'leases of identities that logged in on this auth mount')
    .option('--accessor <accessor>', 'leases created by one token (its accessor)')
    .option('--mount <name>', 'leases of this mount (repeatable)', collect)
    .option('--role <name>', 'leases of this role (repeatable)', collect)
    .option('--engine <type>', 'leases of mounts of this engine type, e.g. postgres, aws (repeatable)', collect)
    .option('--issued-before <time>', 'issued before: RFC 3339, "now", or a duration ago (1h)')
    .option('--issued-after <time>', 'issued after: RFC 3339, or a duration ago (1h)')
    .addOption(
      new Option('--state <state>', 'only leases in this state (repeatable)')
        .choices(['pending', 'active', 'revoking', 'irrevocable'])
        .argParser(collect),
    );
  if (opts.prefix !== false)
    command.option('--prefix <prefix>', 'lease ids starting with this, e.g. db/creds/reader/', leasePrefix);
  return command;
}

/** The flags as the API's selector (src/jobs/lease-selector.ts); relative times resolved now. */
export function selectorFromFlags(flags: SelectorFlags, now = new Date()): Record<string, unknown> {
  const time = (value: string | undefined, flag: string) =>
    value === undefined
      ? undefined
      : value === 'now'
        ? now.toISOString()
        : parseInstant(value, flag, now).toISOString();
  const selector: Record<string, unknown> = {
    identity: flags.identity,
    metadata: flags.meta?.length
      ? Object.fromEntries(flags.meta.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
      : undefined,
    auth_mount: flags.authMount,
    accessor: flags.accessor,
    mount: flags.mount,
    role: flags.role,
    engine: flags.engine,
    lease_prefix: flags.prefix,
    issued_before: time(flags.issuedBefore, '--issued-before'),
    issued_after: time(flags.issuedAfter, '--issued-after'),
    state: flags.state,
    all: flags.all || undefined,
  };
  return Object.fromEntries(Object.entries(selector).filter(([, v]) => v !== undefined));
}

/** The selector as a query string for GET sys/broker/leases. */
export function selectorQuery(selector: Record<string, unknown>): URLSearchParams {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(selector)) {
    if (key === 'metadata')
      for (const [k, v] of Object.entries(value as Record<string, string>)) params.append('metadata', `${k}=${v}`);
    else if (Array.isArray(value)) for (const v of value) params.append(key, String(v));
    else params.set(key, String(value));
  }
  return params;
}
