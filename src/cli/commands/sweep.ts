import type { Command } from 'commander';
import { clientFromEnv, type AnswerBody } from '../client.js';
import { ENV_HELP, mountName, print } from '../options.js';

const EXAMPLE = `
Examples:
  credbroker sweep                  # report roles/users no live lease owns, older than sweep.grace
  credbroker sweep --mount pg-prod  # one mount
  credbroker sweep --apply          # revoke each through its engine (sessions ended, objects, DROP)

Only objects named like the broker's own (PostgreSQL roles <prefix>_<role>_<random>, IAM users
under the broker's path) are considered, never one a pending, active, revoking or irrevocable
lease owns. Exits 1 if any drop failed or the sweep of a mount failed.`;

/** One line per finding: mount, name, since when, and what the run did with it. */
function printTable(mounts: AnswerBody[]): void {
  const rows = [['MOUNT', 'NAME', 'SINCE', 'RESULT']];
  for (const m of mounts) {
    if (m.skipped_reason) rows.push([m.mount, '-', '-', `skipped: ${m.skipped_reason}`]);
    if (m.error) rows.push([m.mount, '-', '-', `failed: ${m.error}`]);
    for (const f of m.found)
      rows.push([
        m.mount,
        f.name,
        f.created_at ? `created ${f.created_at}` : `seen ${f.first_seen}`,
        f.dropped === undefined ? 'found' : f.dropped ? 'dropped' : `failed: ${f.error}`,
      ]);
  }
  if (rows.length === 1) return;
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows)
    process.stdout.write(
      `${row
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd()}\n`,
    );
}

function summary(mounts: AnswerBody[], apply: boolean): string {
  const found = mounts.reduce((n, m) => n + m.found.length, 0);
  const dropped = mounts.reduce((n, m) => n + m.found.filter((f: AnswerBody) => f.dropped).length, 0);
  const failed = mounts.reduce((n, m) => n + m.found.filter((f: AnswerBody) => f.dropped === false).length, 0);
  const skipped = mounts.filter((m) => m.skipped_reason || m.error).length;
  const parts = [
    `${found} orphaned ${found === 1 ? 'object' : 'objects'} on ${mounts.length - skipped} swept ${mounts.length - skipped === 1 ? 'mount' : 'mounts'}`,
  ];
  if (apply) parts.push(`${dropped} dropped`, `${failed} failed`);
  else if (found) parts.push('nothing dropped (run with --apply to drop them)');
  if (skipped) parts.push(`${skipped} skipped`);
  return `${parts.join(', ')}\n`;
}

export function addSweepCommand(program: Command): void {
  program
    .command('sweep')
    .description(
      "find (and with --apply, revoke) objects on the targets made with the broker's naming that no live lease owns",
    )
    .option('--apply', 'revoke what is found, through each engine')
    .option('--mount <mount>', 'only this mount', mountName)
    .option('--json', 'print the answer as JSON')
    .addHelpText('after', `${EXAMPLE}\n${ENV_HELP}`)
    .action(async (opts: { apply?: boolean; mount?: string; json?: boolean }) => {
      const res = await clientFromEnv().request('PUT', 'sys/broker/sweep', {
        apply: opts.apply === true,
        ...(opts.mount ? { mount: opts.mount } : {}),
      });
      const mounts: AnswerBody[] = res.data.mounts;
      if (opts.json) print(res.data);
      else {
        printTable(mounts);
        process.stdout.write(summary(mounts, opts.apply === true));
      }
      const failed = mounts.some((m) => m.error || m.found.some((f: AnswerBody) => f.dropped === false));
      if (failed) process.exitCode = 1;
    });
}
