import type { Command } from 'commander';
import { ApiError, clientFromEnv, type AnswerBody } from '../client.js';
import {
  addSelectorOptions,
  SELECTOR_HELP,
  selectorFromFlags,
  selectorQuery,
  type SelectorFlags,
} from '../lease-selector-options.js';
import { ENV_HELP, leaseId, leasePrefix } from '../options.js';
import { printTable } from '../table.js';
import { runRevokeJob } from './revoke.js';

/** The API pages at most this many leases at a time. */
const PAGE = 1000;

async function listChildren(prefix: string, opts: { irrevocable?: boolean }): Promise<void> {
  if (opts.irrevocable) {
    const res = await clientFromEnv().request('GET', `sys/broker/irrevocable/${prefix}`);
    for (const l of res.data.leases)
      process.stdout.write(`${l.lease_id}\tattempts=${l.attempts}\t${l.last_error ?? ''}\n`);
    if (res.data.leases.length === 0) process.stderr.write('no irrevocable leases\n');
    return;
  }
  try {
    const res = await clientFromEnv().request('LIST', `sys/leases/lookup/${prefix}`);
    for (const key of res.data.keys) process.stdout.write(`${key}\n`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && err.errors.length === 0) return; // nothing there
    throw err;
  }
}

interface ListFlags extends SelectorFlags {
  irrevocable?: boolean;
  json?: boolean;
  limit?: string;
}

function selectorOf(opts: ListFlags): Record<string, unknown> {
  return selectorFromFlags(opts.irrevocable ? { ...opts, state: ['irrevocable'] } : opts);
}

async function listLeases(opts: ListFlags): Promise<void> {
  const limit = opts.limit === undefined ? Infinity : Number(opts.limit);
  if (!(limit >= 1) || !Number.isInteger(limit === Infinity ? 1 : limit))
    throw new Error('--limit must be a positive whole number');
  const params = selectorQuery(selectorOf(opts));
  const client = clientFromEnv();
  const rows: string[][] = [];
  let seen = 0;
  for (let after: string | null = ''; after !== null && seen < limit;) {
    params.set('limit', String(Math.min(PAGE, limit - seen)));
    if (after) params.set('after', after);
    const res = await client.request('GET', `sys/broker/leases?${params}`);
    for (const l of res.data.leases as AnswerBody[]) {
      seen++;
      if (opts.json) process.stdout.write(`${JSON.stringify(l)}\n`);
      else
        rows.push([
          l.lease_id,
          l.identity ? `${l.identity} (${l.auth_mount})` : '-',
          `${l.mount}/${l.role}`,
          l.state,
          l.issued_at,
          l.expires_at,
          l.last_error ?? '',
        ]);
    }
    after = res.data.next_after;
  }
  if (opts.json) return;
  if (rows.length === 0) return void process.stderr.write('no leases match\n');
  printTable(['LEASE', 'IDENTITY', 'MOUNT/ROLE', 'STATE', 'ISSUED', 'EXPIRES', 'LAST ERROR'], rows);
}

async function retry(id: string | undefined, opts: ListFlags & { dryRun?: boolean }): Promise<void> {
  if (id !== undefined) {
    if (opts.irrevocable) throw new Error('give a lease id or --irrevocable, not both');
    await clientFromEnv().request('PUT', 'sys/leases/revoke', { lease_id: id });
    process.stdout.write(`revoked ${id}\n`);
    return;
  }
  if (!opts.irrevocable)
    throw new Error('give a lease id, or --irrevocable for every irrevocable lease (narrow it with --mount …)');
  await runRevokeJob({ all: true, ...selectorOf(opts) }, { dryRun: opts.dryRun, json: opts.json });
}

export function addLeasesCommand(program: Command): void {
  const leases = program
    .command('leases')
    .description('leases: list them by selector (list), retry failed revocations (retry), or browse one path level')
    .argument('[prefix]', 'browse: the next path level under this prefix, e.g. demo/creds/readonly/', leasePrefix, '')
    .option('--irrevocable', 'browse: the irrevocable leases under the prefix, with their last error')
    .enablePositionalOptions()
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nBrowsing a configured mount with nothing under it prints nothing; a mount that is not configured is an error naming the configured ones.`,
    )
    .action(listChildren);
  addSelectorOptions(
    leases
      .command('list')
      .description('live leases as a table: id, identity, mount/role, state, issued, expires, last error'),
  )
    .option('--irrevocable', 'only the leases whose revocation failed for good')
    .option('--limit <n>', 'at most this many leases')
    .option('--json', 'one JSON object per lease instead of a table')
    .addHelpText(
      'after',
      `${SELECTOR_HELP}\n\nWithout a selector every live lease is listed (paged from the API; sudo on sys/broker/leases).\n` +
        `Example: credbroker leases list --meta service_account_namespace=etl --state revoking\n${ENV_HELP}`,
    )
    .action((opts: ListFlags) => listLeases(opts));
  addSelectorOptions(
    leases
      .command('retry')
      .description('revoke again a lease whose revocation failed (an id), or every irrevocable lease (--irrevocable)')
      .argument('[id]', 'a lease id', leaseId),
  )
    .option('--irrevocable', 'every irrevocable lease (narrowed by the selector flags), as a revoke job with progress')
    .option('--dry-run', 'with --irrevocable: print what would be retried and change nothing')
    .option('--json', 'print the final report as JSON')
    .addHelpText(
      'after',
      `\nExamples:\n  credbroker leases retry db/creds/reader/AbC…\n  credbroker leases retry --irrevocable --mount db\n` +
        `Exit status: 1 if a lease still could not be revoked.\n${ENV_HELP}`,
    )
    .action((id: string | undefined, opts: ListFlags & { dryRun?: boolean }) => retry(id, opts));
}
