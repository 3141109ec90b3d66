import { execFile } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { fromIni, fromProcess } from '@aws-sdk/credential-providers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker.js';
import { parseEnvLines } from '../../src/cli/credential-env.js';
import { startAwsBroker, ROLE_ARN } from '../support/aws-broker.js';
import { startAwsEndpoint, type AwsEndpoint } from '../support/aws-endpoint/index.js';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import { runCli } from '../support/cli.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';
import { sweepLogPath } from '../support/secret-recorder.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'agentfmt';

const work = mkdtempSync(join(tmpdir(), 'credbroker-agent-formats-'));
const tokenFile = join(work, 'token');
let pgBroker: Awaited<ReturnType<typeof startTestBroker>>;
let awsBroker: Broker;
let endpoint: AwsEndpoint;

beforeAll(async () => {
  writeFileSync(tokenFile, ROOT_TOKEN);
  const target = await freshTargetDatabase(PREFIX);
  pgBroker = await startTestBroker({
    storeDatabase: await freshStoreDatabase('agentfmt'),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' } },
  });
  endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  awsBroker = await startAwsBroker(endpoint, await freshStoreDatabase('agentfmtaws'), {
    deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m' },
  });
});

afterAll(async () => {
  await pgBroker?.close();
  await awsBroker?.close();
  await endpoint?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(work, { recursive: true, force: true });
});

/** The environment of a consumer: none of the test's own PG*, AWS* or broker variables. */
function consumerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env))
    if (!/^(PG|AWS_|CREDBROKER_|VAULT_)/.test(name)) env[name] = value;
  return { ...env, ...extra };
}

/** Runs `credbroker agent --once` on a config with one lease; its stderr joins the run's secret sweep. */
async function agentOnce(brokerUrl: string, path: string, files: string[]): Promise<void> {
  const config = join(work, `${path.replace(/\W/g, '-')}.yaml`);
  writeFileSync(
    config,
    [
      `broker: { address: ${brokerUrl} }`,
      `auth: { token_file: ${tokenFile} }`,
      'pod_uid: formats-pod',
      'leases:',
      `  - name: ${path.split('/')[0]}`,
      `    path: ${path}`,
      '    files:',
      ...files.map((f) => `      - ${f}`),
    ].join('\n'),
  );
  const run = await runCli(['agent', '--config', config, '--once'], { env: consumerEnv() });
  const log = sweepLogPath('agent');
  if (log) appendFileSync(log, run.stderr);
  expect(run.code, run.stderr).toBe(0);
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) =>
    execFile(command, args, { env, encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: stdout + stderr }),
    ),
  );
}

describe('PostgreSQL files, read by psql and bash', () => {
  const dir = join(work, 'pg');
  let env: Record<string, string>;

  beforeAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    await agentOnce(pgBroker.url, 'db/creds/reader', [
      `{ path: ${dir}/pg.env, format: env }`,
      `{ path: ${dir}/pgpass, format: pgpass }`,
      `{ path: ${dir}/creds.json, format: json }`,
      `{ path: ${dir}/app.conf, template: "host={{ .host }} port={{ .port }} user={{ .username }} db={{ .database }}" }`,
    ]);
    env = parseEnvLines(readFileSync(join(dir, 'pg.env'), 'utf8'));
  });

  afterAll(async () => {
    if (env?.CREDBROKER_LEASE_ID)
      await api(pgBroker, 'PUT', 'sys/leases/revoke', { lease_id: env.CREDBROKER_LEASE_ID });
  });

  it('psql logs in with the written .pgpass as PGPASSFILE (no password anywhere else)', async () => {
    const res = await run(
      'psql',
      [
        '-w',
        '-tA',
        '-h',
        env.PGHOST!,
        '-p',
        env.PGPORT!,
        '-U',
        env.PGUSER!,
        '-d',
        env.PGDATABASE!,
        '-c',
        'SELECT current_user',
      ],
      consumerEnv({ PGPASSFILE: join(dir, 'pgpass') }),
    );
    expect(res).toEqual({ code: 0, stdout: `${env.PGUSER}\n` });
    // The check is real: without the file, psql has no password.
    const without = await run(
      'psql',
      ['-w', '-tA', '-h', env.PGHOST!, '-p', env.PGPORT!, '-U', env.PGUSER!, '-d', env.PGDATABASE!, '-c', 'SELECT 1'],
      consumerEnv({ PGPASSFILE: join(dir, 'absent') }),
    );
    expect(without.code).not.toBe(0);
  });

  it('bash sources the env file (set -a) and psql connects with its PG* variables alone', async () => {
    const script = `set -a; . ${join(dir, 'pg.env')}; set +a; psql -w -tA -c 'SELECT current_user, current_database()'`;
    const res = await run('bash', ['-c', script], consumerEnv());
    expect(res).toEqual({ code: 0, stdout: `${env.PGUSER}|${env.PGDATABASE}\n` });
    // DATABASE_URL too, for drivers that take a URL.
    const url = await run(
      'bash',
      ['-c', `set -a; . ${join(dir, 'pg.env')}; psql -w -tA "$DATABASE_URL" -c 'SELECT 1'`],
      consumerEnv(),
    );
    expect(url).toEqual({ code: 0, stdout: '1\n' });
  });

  it('the json file is the Vault envelope, and the template is rendered with the credential’s fields', () => {
    const json = JSON.parse(readFileSync(join(dir, 'creds.json'), 'utf8'));
    expect(json.lease_id).toBe(env.CREDBROKER_LEASE_ID);
    expect(json.data).toMatchObject({ username: env.PGUSER, password: env.PGPASSWORD, database: env.PGDATABASE });
    expect(readFileSync(join(dir, 'app.conf'), 'utf8')).toBe(
      `host=${env.PGHOST} port=${env.PGPORT} user=${env.PGUSER} db=${env.PGDATABASE}`,
    );
  });
});

describe('AWS files, read by the AWS SDK’s own providers', () => {
  const dir = join(work, 'aws');
  let env: Record<string, string>;

  beforeAll(async () => {
    mkdirSync(dir, { recursive: true });
    await agentOnce(awsBroker.url, 'aws/creds/deploy', [
      `{ path: ${dir}/credential-process.json, format: credential-process }`,
      `{ path: ${dir}/credentials, format: aws-credentials, profile: etl }`,
      `{ path: ${dir}/aws.env, format: env }`,
    ]);
    env = parseEnvLines(readFileSync(join(dir, 'aws.env'), 'utf8'));
    writeFileSync(join(dir, 'config'), `[profile etl]\ncredential_process = cat ${dir}/credential-process.json\n`);
    writeFileSync(join(dir, 'empty'), '');
  });

  afterAll(async () => {
    if (env?.CREDBROKER_LEASE_ID)
      await api(awsBroker, 'PUT', 'sys/leases/revoke', { lease_id: env.CREDBROKER_LEASE_ID });
  });

  const callerArn = async (credentials: ReturnType<typeof fromIni>) => {
    const sts = new STSClient({ endpoint: endpoint.url, region: endpoint.region, maxAttempts: 1, credentials });
    try {
      return (await sts.send(new GetCallerIdentityCommand({}))).Arn!;
    } finally {
      sts.destroy();
    }
  };

  it('fromProcess runs the credential_process that prints the written JSON, and STS accepts the keys', async () => {
    const provider = fromProcess({ profile: 'etl', configFilepath: join(dir, 'config'), filepath: join(dir, 'empty') });
    const identity = await provider();
    expect(identity.accessKeyId).toBe(env.AWS_ACCESS_KEY_ID);
    expect(identity.sessionToken).toBe(env.AWS_SESSION_TOKEN);
    expect(identity.expiration!.getTime()).toBeGreaterThan(Date.now());
    expect(await callerArn(provider)).toMatch(/^arn:aws:sts::123456789012:assumed-role\/deploy\//);
  });

  it('fromIni reads the shared credentials file’s profile, and STS accepts the keys', async () => {
    const provider = fromIni({
      profile: 'etl',
      filepath: join(dir, 'credentials'),
      configFilepath: join(dir, 'empty'),
    });
    const identity = await provider();
    expect([identity.accessKeyId, identity.secretAccessKey, identity.sessionToken]).toEqual([
      env.AWS_ACCESS_KEY_ID,
      env.AWS_SECRET_ACCESS_KEY,
      env.AWS_SESSION_TOKEN,
    ]);
    expect(await callerArn(provider)).toMatch(/^arn:aws:sts::123456789012:assumed-role\/deploy\//);
  });

  it('bash sources the AWS env file: the three AWS_* variables the SDKs read', async () => {
    const res = await run(
      'bash',
      ['-c', `set -a; . ${join(dir, 'aws.env')}; printf '%s|%s' "$AWS_ACCESS_KEY_ID" "$\{#AWS_SESSION_TOKEN}"`],
      consumerEnv(),
    );
    expect(res).toEqual({ code: 0, stdout: `${env.AWS_ACCESS_KEY_ID}|${env.AWS_SESSION_TOKEN!.length}` });
  });
});
