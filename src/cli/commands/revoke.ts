import type { Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { ENV_HELP, leasePrefix } from '../options.js';

async function revokeUnder(opts: { prefix: string; force?: boolean; issuedBefore?: string }): Promise<void> {
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

export function addRevokeCommand(program: Command): void {
  program
    .command('revoke')
    .description('revoke every lease under a prefix (a mount, a role or one lease)')
    .requiredOption('--prefix <prefix>', 'e.g. demo/creds/readonly', leasePrefix)
    .option('--force', 'mark revoked WITHOUT reaching the target (for a target that is gone for good)')
    .option(
      '--issued-before <time>',
      'only leases issued before this RFC 3339 time ("now" for now); AWS roles are cut at once with a deny on aws:TokenIssueTime',
    )
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nPrints how many leases were revoked. A prefix whose mount is not configured is an error naming the configured ones.\n` +
        'Failures do not stop the run: every lease that could not be revoked is listed, and stays queued for retry.',
    )
    .action(revokeUnder);
}
