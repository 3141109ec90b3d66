import type { Command } from 'commander';
import { clientFromEnv, type AnswerBody } from '../client.js';
import { followJob, printJobSummary, progressLine } from '../job-progress.js';
import { ENV_HELP, print } from '../options.js';
import { printTable } from '../table.js';

const jobId = (value: string): string => {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(value)) throw new Error(`not a job id: "${value}" (see credbroker jobs list)`);
  return value;
};

export function addJobsCommand(program: Command): void {
  const jobs = program
    .command('jobs')
    .description('incident revocation jobs: list them, or show one with its progress and failures')
    .addHelpText('after', ENV_HELP);
  jobs
    .command('list')
    .description('the most recent jobs first, with their counts')
    .option('--limit <n>', 'at most this many (1-500)', '50')
    .option('--json', 'print the answer as JSON')
    .addHelpText('after', ENV_HELP)
    .action(async (opts: { limit: string; json?: boolean }) => {
      const res = await clientFromEnv().request('GET', `sys/broker/jobs?limit=${encodeURIComponent(opts.limit)}`);
      if (opts.json) return print(res.data.jobs);
      if (res.data.jobs.length === 0) return void process.stderr.write('no jobs\n');
      printTable(
        ['JOB', 'STATE', 'CREATED', 'TOTAL', 'REVOKED', 'FAILED', 'BY', 'REASON'],
        res.data.jobs.map((j: AnswerBody) => [
          j.id,
          j.state,
          j.created_at,
          String(j.total),
          String(j.revoked),
          String(j.failed),
          j.requested_by,
          j.reason ?? '',
        ]),
      );
    });
  jobs
    .command('show')
    .argument('<id>', 'a job id, as `revoke` printed it', jobId)
    .description('one job: progress (done, failed, remaining, rate, ETA) and each failed lease with its error')
    .option('--follow', 'follow it until done, with a progress bar on a terminal')
    .option('--json', 'print the answer as JSON')
    .addHelpText('after', `\nExit status: 1 if the job has failed leases.\n${ENV_HELP}`)
    .action(async (id: string, opts: { follow?: boolean; json?: boolean }) => {
      const client = clientFromEnv();
      if (opts.follow) await followJob(client, id);
      const job = (await client.request('GET', `sys/broker/jobs/${encodeURIComponent(id)}`)).data;
      if (opts.json) print(job);
      else {
        if (job.state !== 'done') process.stdout.write(`${progressLine(job)}\n`);
        printJobSummary(job);
      }
      if (job.failed > 0) process.exitCode = 1;
    });
}
