import { access, constants } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { clientFromEnv } from '../client.js';
import { CREDENTIAL_FORMATS, formatCredential, type CredentialFormat } from '../credential-format.js';
import { ENV_HELP, mountRole, warn } from '../options.js';
import { writeFileAtomic } from '../write-file-atomic.js';

interface CredsOptions {
  ttl?: string;
  format: CredentialFormat;
  out?: string;
  profile: string;
  roleArn?: string;
  sts?: boolean;
}

async function creds(target: string, opts: CredsOptions): Promise<void> {
  const [mount, role] = target.split('/');
  // Fail before a credential exists if it could not be written anyway.
  if (opts.out)
    await access(dirname(resolve(opts.out)), constants.W_OK).catch(() => {
      throw new Error(`cannot write ${opts.out}: its directory does not exist or is not writable`);
    });
  const client = clientFromEnv();
  const body = { ...(opts.ttl ? { ttl: opts.ttl } : {}), ...(opts.roleArn ? { role_arn: opts.roleArn } : {}) };
  const envelope = await client.request('PUT', `${mount}/${opts.sts ? 'sts' : 'creds'}/${role}`, body);
  warn(envelope.warnings);
  try {
    const text = formatCredential(envelope, opts.format, { profile: opts.profile });
    if (opts.out) {
      await writeFileAtomic(opts.out, text);
      process.stderr.write(`wrote ${opts.out} (lease ${envelope.lease_id}, ${envelope.lease_duration}s)\n`);
    } else {
      process.stdout.write(text);
    }
  } catch (err) {
    // Nobody will ever hold this password: do not leave the credential alive for its TTL.
    await client.request('PUT', 'sys/leases/revoke', { lease_id: envelope.lease_id }).catch(() => undefined);
    throw new Error(`${(err as Error).message}; lease ${envelope.lease_id} was revoked`);
  }
}

export function addCredsCommand(program: Command): void {
  program
    .command('creds')
    .description('get a new credential: a lease on <mount>/<role>')
    .argument('<mount/role>', 'e.g. demo/readonly', mountRole)
    .option('--ttl <ttl>', 'lease TTL: seconds or a duration like 15m, 1h (capped by the role max_ttl)')
    .addOption(new Option('--format <format>', 'output format').choices(CREDENTIAL_FORMATS).default('json'))
    .option('--out <file>', 'write to this file (atomically, mode 0600) instead of stdout')
    .option('--profile <name>', 'profile name for --format aws-credentials', 'default')
    .option('--role-arn <arn>', "AWS assumed_role: which of the role's role_arns to assume")
    .option('--sts', "AWS: ask on the sts path (Vault's /v1/<mount>/sts/<role>) instead of creds")
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nExamples:\n  credbroker creds warehouse/etl-reader --ttl 2h --format pgpass --out /secrets/pgpass\n` +
        '  credbroker creds aws/deploy --format aws-credentials --out ~/.aws/credentials\n' +
        '  # in ~/.aws/config:  credential_process = credbroker creds aws/deploy --format credential-process',
    )
    .action(creds);
}
