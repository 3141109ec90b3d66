import type { Command } from 'commander';
import type { ExecOptions } from '../exec.js';
import { ENV_HELP } from '../options.js';

const collect = (value: string, previous: string[]) => [...previous, value];

export function addExecCommand(program: Command): void {
  program
    .command('exec')
    .description(
      'run a command with leased credentials in its environment; renew them while it runs, revoke them when it exits',
    )
    .argument('<command>', 'the command to run (after --)')
    .argument('[args...]', 'its arguments')
    .option('--lease <path>', 'a credentials path to lease, e.g. demo/creds/readonly (repeatable)', collect, [])
    .option('--env-prefix <prefix>', 'put this in front of every variable name, e.g. WAREHOUSE_', '')
    .option('--ttl <ttl>', 'lease TTL: seconds or a duration like 15m (capped by the role max_ttl)')
    .addHelpText(
      'after',
      `
The command gets PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE and DATABASE_URL for a
PostgreSQL lease, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN for an AWS one, in
its environment only (never in its arguments, so never in ps), and not CREDBROKER_TOKEN. SIGINT,
SIGTERM and SIGHUP are passed on to it. When it exits, every lease is revoked and credbroker exits
with its status (128+N when a signal N ended it).
${ENV_HELP}

Examples:
  credbroker exec --lease demo/creds/readonly -- psql -c 'select 1'
  credbroker exec --lease warehouse/creds/etl --lease aws/creds/deploy -- ./load.sh --day 2026-12-01`,
    )
    .action(async (command: string, args: string[], opts: ExecOptions) => {
      // Loaded here: the SDK is for this command, not for every CLI start (`credbroker server` among them).
      const { exec } = await import('../exec.js');
      await exec(command, args, opts);
    });
}
