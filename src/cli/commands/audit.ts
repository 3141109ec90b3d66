import type { Command } from 'commander';

export function addAuditCommand(program: Command): void {
  program
    .command('audit')
    .description('audit log tools')
    .command('hash')
    .argument('<value>', 'a secret (password, key, token) to look for in the audit log')
    .requiredOption('-c, --config <file>', 'the server config holding audit.hmac_key')
    .description('print the HMAC under which the audit log records this value')
    .action(async (value: string, opts: { config: string }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { hmacField } = await import('../../audit/hmac.js');
      const config = loadConfigFile(opts.config);
      if (!config.audit) throw new Error(`${opts.config} configures no audit log`);
      process.stdout.write(`${hmacField(config.audit.hmac_key, value)}\n`);
    });
}
