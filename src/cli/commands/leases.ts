import type { Command } from 'commander';
import { ApiError, clientFromEnv } from '../client.js';
import { ENV_HELP, leasePrefix } from '../options.js';

async function listLeases(prefix: string, opts: { irrevocable?: boolean }): Promise<void> {
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

export function addLeasesCommand(program: Command): void {
  program
    .command('leases')
    .description('list live leases under a prefix, one path level at a time')
    .argument('[prefix]', 'e.g. demo/creds/readonly/', leasePrefix, '')
    .option(
      '--irrevocable',
      'instead: the leases whose revocation failed for good, with their last error (retry with `lease revoke`, or `revoke --force`)',
    )
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nNothing under a configured mount prints nothing; a mount that is not configured is an error naming the configured ones.`,
    )
    .action(listLeases);
}
