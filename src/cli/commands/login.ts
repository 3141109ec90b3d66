import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { ENV_HELP, print } from '../options.js';

interface LoginOptions {
  role: string;
  mount?: string;
  jwtFile: string;
  cert?: boolean;
  format: 'token' | 'env' | 'json';
}

async function readJwt(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read ${file}: ${err.code ?? err.message}`);
  });
  return text.trim();
}

export function addLoginCommand(program: Command): void {
  program
    .command('login')
    .description(
      'log in with a JWT the workload already has (a Kubernetes service-account token, a CI OIDC token), or with its client certificate (--cert)',
    )
    .requiredOption('--role <role>', 'the auth role to log in as')
    .option('--mount <mount>', 'the auth mount (default: kubernetes, or cert with --cert)')
    .option('--jwt-file <file>', 'where the JWT is', '/var/run/secrets/kubernetes.io/serviceaccount/token')
    .option(
      '--cert',
      'log in to a cert auth mount with the client certificate in CREDBROKER_CLIENT_CERT and CREDBROKER_CLIENT_KEY (over https)',
    )
    .addOption(
      new Option('--format <format>', 'output: the token alone, an export line, or the whole answer')
        .choices(['token', 'env', 'json'])
        .default('token'),
    )
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nExample (an init container):\n  export CREDBROKER_TOKEN=$(credbroker login --role etl)\n  credbroker creds warehouse/etl-reader --format pgpass --out /secrets/pgpass\n\nExample (a CI runner with a certificate):\n  export CREDBROKER_CLIENT_CERT=/etc/runner/tls.crt CREDBROKER_CLIENT_KEY=/etc/runner/tls.key\n  export CREDBROKER_TOKEN=$(credbroker login --cert --role ci)`,
    )
    .action(async (opts: LoginOptions) => {
      const mount = opts.mount ?? (opts.cert ? 'cert' : 'kubernetes');
      const client = clientFromEnv();
      if (opts.cert && !client.presentsCertificate())
        throw new Error('--cert needs a client certificate: set CREDBROKER_CLIENT_CERT and CREDBROKER_CLIENT_KEY');
      const body = opts.cert ? { name: opts.role } : { role: opts.role, jwt: await readJwt(opts.jwtFile) };
      const res = await client.request('PUT', `auth/${mount}/login`, body);
      const token: string = res.auth.client_token;
      if (opts.format === 'json') print(res);
      else process.stdout.write(opts.format === 'env' ? `export CREDBROKER_TOKEN=${token}\n` : `${token}\n`);
      process.stderr.write(
        `logged in as ${res.auth.metadata?.service_account_name || res.auth.metadata?.common_name || opts.role}; policies: ${res.auth.policies.join(', ')}; ${res.auth.lease_duration}s\n`,
      );
    });
}
