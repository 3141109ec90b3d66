import type { Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { ENV_HELP, mountName, print } from '../options.js';

interface Check {
  check: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

export function addMountsCommand(program: Command): void {
  const mounts = program.command('mounts').description('what the configured mounts need on their targets');
  mounts
    .command('check')
    .description(
      "check that a mount's admin login may create and take back credentials on its target (privileges, groups); prints each fix",
    )
    .argument('<mount>', 'mount name, e.g. demo', mountName)
    .option('--json', 'print the whole answer as JSON')
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nExits 1 when a check fails. Each failed check is followed by the SQL that fixes it.`,
    )
    .action(async (mount: string, opts: { json?: boolean }) => {
      const res = await clientFromEnv().request('GET', `${mount}/config/verify`);
      if (opts.json) print(res.data);
      else {
        for (const c of res.data.checks as Check[]) {
          process.stdout.write(
            `${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.detail}\n${c.fix ? `      fix: ${c.fix}\n` : ''}`,
          );
        }
        if (res.data.checks.length === 0) process.stdout.write(`mount ${mount} has nothing to check\n`);
      }
      if (!res.data.ok) process.exitCode = 1;
    });
}
