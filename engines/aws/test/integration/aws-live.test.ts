import { GetRolePolicyCommand, IAMClient } from '@aws-sdk/client-iam';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { afterAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../../../src/broker.js';
import { configSchema } from '../../../../src/config/schema.js';
import { createLogger } from '../../../../src/log.js';
import { findLease } from '../../../../src/leases/sql/lookup.js';
import { ROOT_TOKEN, api } from '../../../../test/support/broker.js';
import { freshStoreDatabase, pgUrl } from '../../../../test/support/pg.js';

/**
 * Against real AWS, only when asked: CREDBROKER_LIVE_AWS=1 with credentials in the SDK's default
 * chain (env, profile, instance role). CREDBROKER_LIVE_AWS_ROLE_ARN adds the assumed_role check
 * (its trust policy must allow sts:AssumeRole and sts:TagSession for those credentials).
 */
const live =
  process.env.CREDBROKER_LIVE_AWS === '1' &&
  Boolean(process.env.AWS_ACCESS_KEY_ID || process.env.AWS_PROFILE || process.env.AWS_WEB_IDENTITY_TOKEN_FILE);
const roleArn = process.env.CREDBROKER_LIVE_AWS_ROLE_ARN;
const reason = live ? '' : ' [skipped: set CREDBROKER_LIVE_AWS=1 with AWS credentials to run against real AWS]';

describe(`real AWS${reason}`, () => {
  let broker: Broker | undefined;
  afterAll(async () => broker?.close());

  const start = async () => {
    const roles: Record<string, unknown> = { session: { credential_type: 'session_token', default_ttl: '15m' } };
    if (roleArn)
      roles.deploy = { credential_type: 'assumed_role', role_arns: [roleArn], default_ttl: '15m', max_ttl: '1h' };
    const config = configSchema.parse({
      listen: { address: '127.0.0.1', port: 0 },
      store: { url: pgUrl(await freshStoreDatabase('awslive')) },
      root_token: ROOT_TOKEN,
      log_level: 'silent',
      mounts: { aws: { type: 'aws', region: process.env.AWS_REGION ?? 'us-east-1', roles } },
    });
    broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
    return broker;
  };
  const whoAmI = (data: Record<string, string>) =>
    new STSClient({
      region: process.env.AWS_REGION ?? 'us-east-1',
      credentials: {
        accessKeyId: data.access_key!,
        secretAccessKey: data.secret_key!,
        sessionToken: data.session_token,
      },
    })
      .send(new GetCallerIdentityCommand({}))
      .then((r) => r.Arn);

  it.skipIf(!live)('issues a session token that AWS accepts', async () => {
    const b = await start();
    const res = await api(b, 'PUT', 'aws/creds/session');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(await whoAmI(res.body.data)).toMatch(/^arn:aws:/);
  });

  it.skipIf(!live || !roleArn)(
    'cuts an assumed-role session off when its lease is revoked (IAM takes a few seconds)',
    async () => {
      const b = broker ?? (await start());
      const res = await api(b, 'PUT', 'aws/creds/deploy');
      expect(await whoAmI(res.body.data)).toContain(':assumed-role/');
      expect((await api(b, 'PUT', 'sys/leases/revoke', { lease_id: res.body.lease_id })).status).toBe(204);
      // AWS never denies GetCallerIdentity, so the check is the deny policy as AWS now stores it.
      const token = (await findLease(b.store.pool, res.body.lease_id))!.revoke_handle.token as string;
      const iam = new IAMClient({ region: 'us-east-1' });
      const policy = await iam.send(
        new GetRolePolicyCommand({
          RoleName: roleArn!.slice(roleArn!.lastIndexOf('/') + 1),
          PolicyName: 'credbroker-revoked-sessions',
        }),
      );
      expect(decodeURIComponent(policy.PolicyDocument!)).toContain(token);
    },
    60_000,
  );
});
