import { Option, type Command } from 'commander';
import { port } from '../options.js';

export function addDevCommand(program: Command): void {
  program
    .command('dev')
    .description('run a broker on an embedded PostgreSQL (lease store and demo target) with a demo/readonly role')
    .option('-p, --port <port>', 'HTTP port', port, 8200)
    .option('--address <address>', 'listen address', '127.0.0.1')
    .option('--data <dir>', 'keep the embedded database in this directory across restarts')
    .addOption(
      new Option('--root-token <token>', 'root token to accept (default: a new random one, printed)').env(
        'CREDBROKER_ROOT_TOKEN',
      ),
    )
    .option('--log-level <level>', 'fatal|error|warn|info|debug', 'warn')
    .option(
      '--tls',
      'serve https with a throwaway CA and certificate made in the data dir; prints the CREDBROKER_CACERT to export',
    )
    .action(
      async (opts: {
        port: number;
        address: string;
        data?: string;
        rootToken?: string;
        logLevel: string;
        tls?: boolean;
      }) => {
        const { runDev } = await import('../dev.js');
        await runDev(opts);
      },
    );
}
