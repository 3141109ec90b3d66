import type { Command } from 'commander';
import { clientFromEnv, type AnswerBody } from '../client.js';
import { ENV_HELP, print } from '../options.js';

const EXAMPLE = `
Example: the lease store was restored from last night's backup. Its rows say leases expired hours
ago that live jobs have since renewed; reaping them would cut those jobs off. Before the restored
store takes traffic:
  credbroker reaper pause --reason "store restored from 02:00 backup"
  credbroker reaper status          # paused since …, by …, N expiries queued
  … reconcile (renew what is live, revoke what is not) …
  credbroker reaper resume          # every replica reaps the queue at its next tick

While paused, no replica revokes an expiry or cleans up a crashed issue (stale pending); explicit
revokes (lease revoke, revoke --prefix, token revoke) and revocations already begun still run.`;

/** The status as people read it: one line, then who and why when paused. */
function describeStatus(data: AnswerBody): string {
  const queued = `${data.due_queued} ${data.due_queued === 1 ? 'lease' : 'leases'} due`;
  if (!data.paused) return `reaper: running (${queued})\n`;
  return (
    `reaper: PAUSED since ${data.since} by ${data.paused_by} (${queued}, held until resume)\n` +
    (data.reason ? `reason: ${data.reason}\n` : '')
  );
}

export function addReaperCommand(program: Command): void {
  const reaper = program
    .command('reaper')
    .description("pause, resume or show the reaper's automatic revocation, on every replica at once")
    .addHelpText('after', `${EXAMPLE}\n${ENV_HELP}`);
  reaper
    .command('pause')
    .description('stop revoking expired leases and crashed issues (they queue) until resume')
    .option('--reason <text>', 'why, for status and the audit log')
    .addHelpText('after', `${EXAMPLE}\n${ENV_HELP}`)
    .action(async (opts: { reason?: string }) => {
      const res = await clientFromEnv().request(
        'PUT',
        'sys/broker/reaper/pause',
        opts.reason === undefined ? {} : { reason: opts.reason },
      );
      process.stdout.write(describeStatus(res.data));
    });
  reaper
    .command('resume')
    .description('revoke what queued while paused, and reap again as usual')
    .addHelpText('after', ENV_HELP)
    .action(async () => {
      const res = await clientFromEnv().request('PUT', 'sys/broker/reaper/resume');
      process.stdout.write(describeStatus(res.data));
    });
  reaper
    .command('status')
    .description('whether the reaper is paused, since when, by whom and why, and how many expiries are due')
    .option('--json', 'print the answer as JSON')
    .addHelpText('after', ENV_HELP)
    .action(async (opts: { json?: boolean }) => {
      const res = await clientFromEnv().request('GET', 'sys/broker/reaper/status');
      if (opts.json) print(res.data);
      else process.stdout.write(describeStatus(res.data));
    });
}
