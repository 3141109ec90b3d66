import type { Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { ENV_HELP, leaseId, print, warn } from '../options.js';

export function addLeaseCommand(program: Command): void {
  const lease = program
    .command('lease')
    .description('look up, renew or revoke one lease')
    .addHelpText('after', ENV_HELP);
  lease
    .command('lookup')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .description("show a lease's times, state and revocation history")
    .addHelpText('after', ENV_HELP)
    .action(async (id: string) => {
      print((await clientFromEnv().request('PUT', 'sys/leases/lookup', { lease_id: id })).data);
    });
  lease
    .command('renew')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .addHelpText('after', ENV_HELP)
    .option('--increment <ttl>', 'requested new TTL from now (default: the role default_ttl)')
    .description('extend a lease (never past its max_ttl)')
    .action(async (id: string, opts: { increment?: string }) => {
      const res = await clientFromEnv().request('PUT', 'sys/leases/renew', {
        lease_id: id,
        ...(opts.increment ? { increment: opts.increment } : {}),
      });
      warn(res.warnings);
      print({ lease_id: res.lease_id, lease_duration: res.lease_duration });
    });
  lease
    .command('revoke')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .addHelpText('after', ENV_HELP)
    .description('revoke a lease now (succeeds if it is already revoked; fails if no such lease was ever issued)')
    .action(async (id: string) => {
      const { body, headers } = await clientFromEnv().send('PUT', 'sys/leases/revoke', { lease_id: id });
      warn(body?.warnings);
      // The API answers Vault's 204 in every case; the broker's header says which it was.
      const outcome = headers.get('x-credbroker-revoke');
      if (outcome === 'not-found') throw new Error(`no lease ${id} was ever issued (a typo?); nothing was revoked`);
      process.stderr.write(outcome === 'already-revoked' ? `${id} was already revoked\n` : `revoked ${id}\n`);
    });
}
