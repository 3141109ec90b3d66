import type { ApiClient, AnswerBody } from './client.js';
import { printTable } from './table.js';

const TTY_POLL_MS = 250;
const PLAIN_POLL_MS = 1000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const count = (n: number, word: string) => `${n} ${n === 1 ? word : `${word}s`}`;

/** One plain progress line: for a log file or a CI console, where a redrawn bar would be noise. */
export function progressLine(job: AnswerBody): string {
  const eta = job.eta_seconds === null ? 'ETA unknown' : `ETA ${job.eta_seconds} s`;
  return `${job.id}: ${job.revoked + job.failed}/${job.total} done (${job.revoked} revoked, ${job.failed} failed, ${job.remaining} remaining), ${job.rate_per_second}/s, ${eta}`;
}

/**
 * Follows a job until it is done: a redrawn bar on a terminal (cli-progress), a plain line per
 * second otherwise, both on stderr. Answers the final report, failures included.
 */
export async function followJob(client: ApiClient, jobId: string, stream: NodeJS.WriteStream = process.stderr) {
  const tty = Boolean(stream.isTTY);
  let bar: import('cli-progress').SingleBar | undefined;
  if (tty) {
    const { SingleBar, Presets } = await import('cli-progress');
    bar = new SingleBar(
      {
        stream,
        format:
          '{bar} {percentage}% | {done}/{total} · revoked {revoked} · failed {failed} · left {remaining} | {rate}/s | ETA {eta_formatted}',
        hideCursor: true,
        etaBuffer: 20,
      },
      Presets.shades_classic,
    );
  }
  const interrupt = () => {
    bar?.stop();
    stream.write(`\nstopped following; the job goes on in the broker: credbroker jobs show ${jobId}\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupt);
  try {
    for (let first = true; ; first = false) {
      const job = (await client.request('GET', `sys/broker/jobs/${encodeURIComponent(jobId)}`)).data;
      const payload = {
        done: job.revoked + job.failed,
        revoked: job.revoked,
        failed: job.failed,
        remaining: job.remaining,
        rate: job.rate_per_second,
      };
      if (bar) {
        if (first) bar.start(Math.max(job.total, 1), payload.done, payload);
        else bar.update(payload.done, payload);
      } else stream.write(`${progressLine(job)}\n`);
      if (job.state === 'done') {
        bar?.stop();
        return job;
      }
      await sleep(tty ? TTY_POLL_MS : PLAIN_POLL_MS);
    }
  } finally {
    process.removeListener('SIGINT', interrupt);
  }
}

/** The end of a job, for people: one summary line, then each failed lease with its error. */
export function printJobSummary(job: AnswerBody): void {
  process.stdout.write(
    `${job.id}: ${count(job.total, 'lease')} selected, ${job.revoked} revoked, ${job.failed} failed` +
      `${job.state === 'done' ? ` in ${job.elapsed_seconds} s` : ` so far (${job.remaining} remaining)`}\n`,
  );
  if (job.failures?.length) {
    process.stdout.write('\nfailed (each stays queued: the reaper retries it with backoff, or it is irrevocable):\n');
    printTable(
      ['LEASE', 'ERROR'],
      job.failures.map((f: AnswerBody) => [f.lease_id, f.error ?? '']),
    );
    if (job.failures_truncated) process.stdout.write(`… and more: credbroker jobs show ${job.id} --json\n`);
  }
}
