import type { Command } from 'commander';

export function addServerCommand(program: Command): void {
  program
    .command('server')
    .description('run a broker process (any number can share one lease store)')
    .requiredOption('-c, --config <file>', 'YAML config file')
    .action(async (opts: { config: string }) => {
      const { runServer } = await import('../server.js');
      await runServer(opts.config);
    });
}

export function addMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('apply pending lease-store migrations and exit (the server also does this at start)')
    .requiredOption('-c, --config <file>', 'YAML config file')
    .action(async (opts: { config: string }) => {
      const { runMigrate } = await import('../server.js');
      await runMigrate(opts.config);
    });
}
