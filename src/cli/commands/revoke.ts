import type { Command } from 'commander';
import { clientFromEnv, type AnswerBody } from '../client.js';
import { followJob, printJobSummary } from '../job-progress.js';
import { addSelectorOptions, SELECTOR_HELP, selectorFromFlags, type SelectorFlags } from '../lease-selector-options.js';
import { ENV_HELP, print } from '../options.js';
import { printTable } from '../table.js';

interface RevokeFlags extends SelectorFlags {
  force?: boolean;
  dryRun?: boolean;
  reason?: string;
  detach?: boolean;
  json?: boolean;
}

const EXAMPLE = `
Examples (an incident: a namespace's service accounts leaked):
  credbroker revoke --meta service_account_namespace=etl --dry-run     # what would go, changes nothing
  credbroker revoke --meta service_account_namespace=etl --reason INC-42
  credbroker revoke --identity system:serviceaccount:ci:deployer --mount db --mount wh
  credbroker revoke --mount aws --role deploy --issued-before now      # AWS: the whole role cut at once
  credbroker revoke --prefix db/creds/reader/                          # the classic revoke-prefix

A revocation with a selector runs as a job in the broker: it survives a broker restart (any replica
carries it on) and never stops at the first failure. This command follows it — a progress bar on a
terminal, a line per second otherwise — and ends with a summary listing each lease that failed, with
its error; failures stay queued for the reaper's retries (see \`credbroker leases list --state revoking\`).
Ctrl-C stops following, not the job: \`credbroker jobs show <id>\`.
Exit status: 0 when every selected lease was revoked, 1 if any failed (or on any error).`;

/** revoke-prefix, revoke-issued-before and revoke-force, answered at once (no job). */
async function revokePrefixNow(opts: RevokeFlags & { prefix: string }): Promise<void> {
  if (opts.force && opts.issuedBefore) throw new Error('--force and --issued-before cannot be combined');
  process.stderr.write(
    `revoking leases under ${opts.prefix}${opts.force ? ' (force: targets are not contacted)' : ''}…\n`,
  );
  if (opts.issuedBefore) {
    const before = opts.issuedBefore === 'now' ? new Date().toISOString() : opts.issuedBefore;
    const res = await clientFromEnv().request('PUT', `sys/broker/revoke-issued-before/${opts.prefix}`, {
      issued_before: before,
    });
    process.stderr.write(`revoked ${res.data.revoked} leases issued before ${before}\n`);
    return;
  }
  const { headers } = await clientFromEnv().send(
    'PUT',
    `sys/leases/${opts.force ? 'revoke-force' : 'revoke-prefix'}/${opts.prefix}`,
  );
  const revoked = headers.has('x-credbroker-revoked') ? Number(headers.get('x-credbroker-revoked')) : NaN;
  if (!Number.isInteger(revoked))
    process.stderr.write('done\n'); // Vault, or a broker that does not count
  else
    process.stderr.write(
      `${opts.force ? 'marked revoked' : 'revoked'} ${revoked} ${revoked === 1 ? 'lease' : 'leases'} under ${opts.prefix}\n`,
    );
}

function printDryRun(dry: AnswerBody): void {
  process.stdout.write(
    `dry run: ${dry.total} ${dry.total === 1 ? 'lease' : 'leases'} would be revoked; nothing changed\n`,
  );
  if (dry.total === 0) return;
  printTable(
    ['MOUNT', 'ROLE', 'STATE', 'LEASES'],
    dry.by_role.map((g: AnswerBody) => [g.mount, g.role, g.state, String(g.count)]),
  );
  process.stdout.write(`\nfirst ${dry.lease_ids.length} by id:\n${dry.lease_ids.join('\n')}\n`);
}

/** Starts (or dry-runs) a revoke job for a selector, and follows it to its summary. */
export async function runRevokeJob(
  selector: Record<string, unknown>,
  opts: { dryRun?: boolean; reason?: string; detach?: boolean; json?: boolean },
): Promise<void> {
  const client = clientFromEnv();
  const res = await client.request('PUT', 'sys/broker/revoke', {
    ...selector,
    ...(opts.dryRun ? { dry_run: true } : {}),
    ...(opts.reason ? { reason: opts.reason } : {}),
  });
  if (opts.dryRun) return opts.json ? print(res.data) : printDryRun(res.data);
  const started = res.data;
  process.stderr.write(`job ${started.id}: ${started.total} ${started.total === 1 ? 'lease' : 'leases'} selected\n`);
  if (opts.detach) {
    process.stdout.write(`${started.id}\n`);
    return;
  }
  await followJob(client, started.id);
  const report = (await client.request('GET', `sys/broker/jobs/${encodeURIComponent(started.id)}`)).data;
  if (opts.json) print(report);
  else printJobSummary(report);
  if (report.failed > 0) {
    process.exitCode = 1;
    process.stderr.write(
      `error: ${report.failed} ${report.failed === 1 ? 'lease' : 'leases'} could not be revoked; they stay queued for retry\n`,
    );
  }
}

async function revoke(opts: RevokeFlags): Promise<void> {
  const selector = selectorFromFlags(opts);
  const onlyPrefix = Object.keys(selector).every((k) => k === 'lease_prefix' || k === 'issued_before');
  if (opts.force || (opts.prefix && onlyPrefix && !opts.dryRun))
    return revokePrefixNow({ ...opts, prefix: opts.prefix ?? '' });
  if (Object.keys(selector).length === 0 || Object.keys(selector).every((k) => k === 'state'))
    throw new Error('say which leases: --identity, --meta, --mount, --role, … (see --help), or --all for every lease');
  await runRevokeJob(selector, opts);
}

export function addRevokeCommand(program: Command): void {
  const command = program
    .command('revoke')
    .description('revoke leases by identity, metadata, mount, role, time or prefix: an incident revocation job');
  addSelectorOptions(command)
    .option('--all', 'every lease the broker holds (say it to mean it)')
    .option('--dry-run', 'print what would be revoked (counts by mount/role, first ids) and change nothing')
    .option('--reason <text>', "why, for the job's record and the audit log (an incident number)")
    .option('--detach', 'print the job id and return at once instead of following it')
    .option('--json', 'print the dry run or the final report as JSON')
    .option('--force', 'with --prefix: mark revoked WITHOUT reaching the target (a target gone for good)')
    .addHelpText('after', `${SELECTOR_HELP}\n${EXAMPLE}\n${ENV_HELP}`)
    .action((opts: RevokeFlags) => revoke(opts));
}
