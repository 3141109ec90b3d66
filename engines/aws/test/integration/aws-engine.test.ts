import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INLINE_POLICY_LIMIT } from '../../deny-policy.js';
import type { Broker } from '../../../../src/broker.js';
import { ConfigError } from '../../../../src/errors.js';
import { parseConfig } from '../../../../src/config/load.js';
import { packageRoot } from '../../../../src/package-root.js';
import { findLease } from '../../../../src/leases/sql/lookup.js';
import { startAwsEndpoint, type AwsEndpoint } from '../../../../test/support/aws-endpoint/index.js';
import { OTHER_ROLE_ARN, ROLE_ARN, callerArn, startAwsBroker } from '../../../../test/support/aws-broker.js';
import { ROOT_TOKEN, api } from '../../../../test/support/broker.js';
import { adminQuery, freshStoreDatabase } from '../../../../test/support/pg.js';

const run = promisify(execFile);
const POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}';
const roles = {
  deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m', max_ttl: '2h' },
  multi: { credential_type: 'assumed_role', role_arns: [ROLE_ARN, OTHER_ROLE_ARN], default_ttl: '15m' },
  fed: { credential_type: 'federation_token', policy_document: POLICY, default_ttl: '15m' },
  ci: { credential_type: 'iam_user', default_ttl: '15m' },
  session: { credential_type: 'session_token', default_ttl: '15m' },
  ghost: {
    credential_type: 'assumed_role',
    role_arns: ['arn:aws:iam::123456789012:role/not-there'],
    default_ttl: '15m',
  },
};

let endpoint: AwsEndpoint;
let broker: Broker;
let storeDb: string;

beforeAll(async () => {
  endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }, { arn: OTHER_ROLE_ARN }] });
  storeDb = await freshStoreDatabase('awseng');
  broker = await startAwsBroker(endpoint, storeDb, roles);
});
afterAll(async () => {
  await broker?.close();
  await endpoint?.close();
});

const denyPolicyOf = (roleName: string) =>
  endpoint.state.roles.get(roleName)!.inlinePolicies.get('credbroker-revoked-sessions');
const putRolePolicyCalls = () => endpoint.calls.filter((c) => c.action === 'PutRolePolicy' && c.status === 200).length;
const cli = (args: string[]) =>
  run(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), ...args], {
    env: { ...process.env, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN },
  });

describe('AWS credentials through the HTTP API', () => {
  it("answers Vault's AWS fields on the sts path too, and the keys sign a GetCallerIdentity", async () => {
    const res = await api(broker, 'PUT', 'aws/sts/deploy', { ttl: '20m' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.lease_id).toMatch(/^aws\/sts\/deploy\//);
    expect(res.body.lease_duration).toBe(1200);
    expect(Object.keys(res.body.data)).toEqual(
      expect.arrayContaining(['access_key', 'secret_key', 'session_token', 'arn']),
    );
    expect(await callerArn(endpoint, res.body.data)).toMatch(
      /^arn:aws:sts::123456789012:assumed-role\/deploy\/cb-deploy-/,
    );
  });

  it('assumes the role_arn asked for among several, and refuses one outside the list', async () => {
    const chosen = await api(broker, 'PUT', 'aws/creds/multi', { role_arn: OTHER_ROLE_ARN });
    expect(chosen.status).toBe(200);
    expect(await callerArn(endpoint, chosen.body.data)).toContain('assumed-role/audit/');
    const before = endpoint.calls.length;
    expect((await api(broker, 'PUT', 'aws/creds/multi', {})).body.errors[0]).toMatch(/role_arn is required/);
    expect(
      (await api(broker, 'PUT', 'aws/creds/multi', { role_arn: 'arn:aws:iam::123456789012:role/admin' })).status,
    ).toBe(400);
    expect(endpoint.calls.length).toBe(before);
  });

  it('refuses an STS TTL below 900 s or above the role session cap with a 400, before any AWS call or lease row', async () => {
    const before = endpoint.calls.length;
    const {
      rows: [{ n: rowsBefore }],
    } = await broker.store.pool.query('SELECT count(*)::int AS n FROM credbroker_leases');
    const short = await api(broker, 'PUT', 'aws/creds/deploy', { ttl: '10m' });
    expect(short.status).toBe(400);
    expect(short.body.errors[0]).toMatch(/at least 900s/);
    const long = await api(broker, 'PUT', 'aws/creds/deploy', { ttl: '2h' });
    expect(long.status).toBe(400);
    expect(long.body.errors[0]).toMatch(/maximum session duration of 3600s/);
    expect(endpoint.calls.length).toBe(before);
    const {
      rows: [{ n: rowsAfter }],
    } = await broker.store.pool.query('SELECT count(*)::int AS n FROM credbroker_leases');
    expect(rowsAfter).toBe(rowsBefore);
  });

  it("turns AWS's refusal into a 502 carrying AWS's code and message, and no secret", async () => {
    const res = await api(broker, 'PUT', 'aws/creds/ghost');
    expect(res.status).toBe(502);
    expect(res.body.errors[0]).toMatch(/AccessDenied/);
    expect(JSON.stringify(res.body)).not.toContain(endpoint.baseCredentials.secretAccessKey);
  });

  it("lets the SDK's own retry strategy absorb throttling", async () => {
    endpoint.throttleNext(2);
    const start = endpoint.calls.length;
    const res = await api(broker, 'PUT', 'aws/creds/deploy');
    expect(res.status).toBe(200);
    expect(endpoint.calls.slice(start).map((c) => c.code ?? c.status)).toEqual(['Throttling', 'Throttling', 200]);
  });
});

describe('revoking STS sessions', () => {
  it('writes one deny statement naming the lease; a second revoke writes nothing', async () => {
    const a = (await api(broker, 'PUT', 'aws/creds/deploy')).body;
    const b = (await api(broker, 'PUT', 'aws/creds/deploy')).body;
    const writes = putRolePolicyCalls();
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: a.lease_id })).status).toBe(204);
    expect(putRolePolicyCalls()).toBe(writes + 1);
    const token = (await findLease(broker.store.pool, a.lease_id))!.revoke_handle.token as string;
    expect(denyPolicyOf('deploy')).toContain(token);
    await expect(callerArn(endpoint, a.data)).rejects.toThrow(/AccessDenied|not authorized/);
    expect(await callerArn(endpoint, b.data)).toContain('assumed-role/deploy/'); // its neighbour still works
    expect((await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: a.lease_id })).status).toBe(204);
    expect(putRolePolicyCalls()).toBe(writes + 1);
  });

  it("keeps the deny policy within IAM's inline limit with 500 sessions revoked before expiry", async () => {
    const leases: { lease_id: string; data: Record<string, string> }[] = [];
    for (let i = 0; i < 500; i += 50) {
      leases.push(
        ...(await Promise.all(
          Array.from({ length: 50 }, async () => (await api(broker, 'PUT', 'aws/creds/deploy')).body),
        )),
      );
    }
    const writes = putRolePolicyCalls();
    const res = await api(broker, 'PUT', 'sys/leases/revoke-prefix/aws/creds/deploy');
    expect(res.status, JSON.stringify(res.body)).toBe(204);
    expect(putRolePolicyCalls() - writes).toBeLessThanOrEqual(4); // batched: one write per role per batch of 256
    const policy = denyPolicyOf('deploy')!;
    expect(policy.replace(/\s/g, '').length).toBeLessThanOrEqual(INLINE_POLICY_LIMIT);
    for (const lease of [leases[0]!, leases[250]!, leases[499]!])
      await expect(callerArn(endpoint, lease.data)).rejects.toThrow();
  });

  it("cuts every session of a role issued before a time with AWS's aws:TokenIssueTime deny, sparing later ones", async () => {
    const old = (await api(broker, 'PUT', 'aws/creds/multi', { role_arn: OTHER_ROLE_ARN })).body;
    await new Promise((r) => setTimeout(r, 1100)); // STS issue times have one-second precision
    const cutoff = new Date();
    await new Promise((r) => setTimeout(r, 1100));
    const fresh = (await api(broker, 'PUT', 'aws/creds/multi', { role_arn: OTHER_ROLE_ARN })).body;
    const writes = putRolePolicyCalls();
    const res = await api(broker, 'PUT', 'sys/broker/revoke-issued-before/aws/creds/multi/', {
      issued_before: cutoff.toISOString(),
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.data.revoked).toBeGreaterThanOrEqual(1);
    expect(putRolePolicyCalls() - writes).toBe(2); // one statement on each of the role's two AWS roles, not one per lease
    expect(denyPolicyOf('audit')).toContain('aws:TokenIssueTime');
    await expect(callerArn(endpoint, old.data)).rejects.toThrow();
    expect(await callerArn(endpoint, fresh.data)).toContain('assumed-role/audit/');
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: old.lease_id })).body.data).toMatchObject({
      state: 'revoked',
      revoke_reason: 'prefix',
    });
    // Revoked with its whole role, not one by one: it still has its own audit event.
    const events = await adminQuery(
      storeDb,
      `SELECT operation FROM credbroker_audit WHERE type = 'event' AND lease_id = $1`,
      [old.lease_id],
    );
    expect(events).toEqual([{ operation: 'revoked' }]);
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: fresh.lease_id })).body.data.state).toBe(
      'active',
    );
  });

  it('a revoke job selecting a whole role cuts its sessions with the same deny, not one by one', async () => {
    const old = (await api(broker, 'PUT', 'aws/creds/multi', { role_arn: OTHER_ROLE_ARN })).body;
    await new Promise((r) => setTimeout(r, 1100));
    const cutoff = new Date();
    await new Promise((r) => setTimeout(r, 1100));
    const fresh = (await api(broker, 'PUT', 'aws/creds/multi', { role_arn: OTHER_ROLE_ARN })).body;
    const writes = putRolePolicyCalls();
    const start = await api(broker, 'PUT', 'sys/broker/revoke', {
      mount: 'aws',
      role: 'multi',
      issued_before: cutoff.toISOString(),
    });
    expect(start.status, JSON.stringify(start.body)).toBe(202);
    let job: { state?: string; total?: number; revoked?: number } | undefined;
    for (let i = 0; i < 200 && job?.state !== 'done'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      job = (await api(broker, 'GET', `sys/broker/jobs/${start.body.data.id}`)).body.data;
    }
    expect(job).toMatchObject({ state: 'done', failed: 0 });
    expect(job.revoked).toBe(job.total);
    expect(putRolePolicyCalls() - writes).toBe(2); // one statement on each of the role's two AWS roles
    await expect(callerArn(endpoint, old.data)).rejects.toThrow();
    expect(await callerArn(endpoint, fresh.data)).toContain('assumed-role/audit/');
    const events = await adminQuery(
      storeDb,
      `SELECT operation FROM credbroker_audit WHERE type = 'event' AND lease_id = $1`,
      [old.lease_id],
    );
    expect(events).toEqual([{ operation: 'revoked' }]);
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: fresh.lease_id })).body.data.state).toBe(
      'active',
    );
  });

  it('refuses an issued_before that is not an RFC 3339 time', async () => {
    const res = await api(broker, 'PUT', 'sys/broker/revoke-issued-before/aws/creds/multi/', {
      issued_before: 'yesterday',
    });
    expect(res.status).toBe(400);
    expect(res.body.errors[0]).toMatch(/RFC 3339/);
  });

  it('tells the truth about a federation token: revoked here, alive at AWS until it expires', async () => {
    const lease = (await api(broker, 'PUT', 'aws/creds/fed')).body;
    const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: lease.lease_id });
    expect(res.status).toBe(200);
    expect(res.body.warnings[0]).toMatch(/cannot be revoked before it expires.*federation token/);
    const lookup = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: lease.lease_id });
    expect(lookup.body.data).toMatchObject({ revocable_before_expiry: false, state: 'revoked' });
  });
});

describe('the CLI renders AWS credentials for AWS tools', () => {
  it('writes a shared-credentials profile whose keys work', async () => {
    const { stdout } = await cli(['creds', 'aws/deploy', '--format', 'aws-credentials', '--profile', 'etl']);
    expect(stdout).toMatch(
      /^\[etl\]\naws_access_key_id = ASIA\w+\naws_secret_access_key = \S+\naws_session_token = \S+\n$/,
    );
    const value = (k: string) => new RegExp(`${k} = (\\S+)`).exec(stdout)![1]!;
    expect(
      await callerArn(endpoint, {
        access_key: value('aws_access_key_id'),
        secret_key: value('aws_secret_access_key'),
        session_token: value('aws_session_token'),
      }),
    ).toContain('assumed-role');
  });

  it("prints credential_process's JSON: Version 1 with an Expiration", async () => {
    const { stdout } = await cli(['creds', 'aws/deploy', '--format', 'credential-process']);
    const out = JSON.parse(stdout);
    expect(out).toMatchObject({
      Version: 1,
      AccessKeyId: expect.stringMatching(/^ASIA/),
      SecretAccessKey: expect.any(String),
      SessionToken: expect.any(String),
    });
    expect(Date.parse(out.Expiration)).toBeGreaterThan(Date.now());
  });

  it.each(['deploy', 'fed', 'session', 'ci'])(
    'issues %s through the CLI with keys that sign a GetCallerIdentity',
    async (role) => {
      const { stdout } = await cli(['creds', `aws/${role}`, '--format', 'credential-process']);
      const out = JSON.parse(stdout);
      expect(
        await callerArn(endpoint, {
          access_key: out.AccessKeyId,
          secret_key: out.SecretAccessKey,
          session_token: out.SessionToken ?? null,
        }),
      ).toMatch(/^arn:aws:/);
    },
  );

  it('prints AWS_* variables for an IAM user, without a session token', async () => {
    const { stdout } = await cli(['creds', 'aws/ci', '--format', 'env']);
    expect(stdout).toMatch(/^AWS_ACCESS_KEY_ID='AKIA\w+'$/m);
    expect(stdout).toMatch(/^AWS_SECRET_ACCESS_KEY='\S+'$/m);
    expect(stdout).not.toMatch(/AWS_SESSION_TOKEN/);
  });
});

describe('AWS role config', () => {
  const config = (role: string) =>
    `store: {url: "postgres://x@h/db"}\nroot_token: \${env:T}\nmounts:\n  aws:\n    type: aws\n    roles:\n      r: ${role}\n`;
  const check = (role: string) => () => parseConfig(config(role), { T: 'root-token-0123456789' });

  it('refuses an unknown credential_type, naming the key', () => {
    expect(check('{credential_type: root_keys}')).toThrow(ConfigError);
    expect(check('{credential_type: root_keys}')).toThrow(/mounts\.aws\.roles\.r\.credential_type/);
  });

  it('refuses a policy_document that is not JSON', () => {
    expect(check("{credential_type: federation_token, policy_document: '{not json'}")).toThrow(
      /policy_document: must be a JSON policy document/,
    );
  });
});
