import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { ENV_HELP, print } from '../options.js';

export function addLoginCommand(program: Command): void {
  program
    .command('login')
    .description('log in with a JWT the workload already has (a Kubernetes service-account token, a CI OIDC token)')
    .requiredOption('--role <role>', 'the auth role to log in as')
    .option('--mount <mount>', 'the auth mount (e.g. kubernetes, jwt)', 'kubernetes')
    .option('--jwt-file <file>', 'where the JWT is', '/var/run/secrets/kubernetes.io/serviceaccount/token')
    .addOption(
      new Option('--format <format>', 'output: the token alone, an export line, or the whole answer')
        .choices(['token', 'env', 'json'])
        .default('token'),
    )
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nExample (an init container):\n  export CREDBROKER_TOKEN=$(credbroker login --role etl)\n  credbroker creds warehouse/etl-reader --format pgpass --out /secrets/pgpass`,
    )
    .action(async (opts: { role: string; mount: string; jwtFile: string; format: 'token' | 'env' | 'json' }) => {
      const jwt = (
        await readFile(opts.jwtFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
          throw new Error(`cannot read ${opts.jwtFile}: ${err.code ?? err.message}`);
        })
      ).trim();
      const res = await clientFromEnv().request('PUT', `auth/${opts.mount}/login`, { role: opts.role, jwt });
      const token: string = res.auth.client_token;
      if (opts.format === 'json') print(res);
      else process.stdout.write(opts.format === 'env' ? `export CREDBROKER_TOKEN=${token}\n` : `${token}\n`);
      process.stderr.write(
        `logged in as ${res.auth.metadata?.service_account_name || opts.role}; policies: ${res.auth.policies.join(', ')}; ${res.auth.lease_duration}s\n`,
      );
    });
}
