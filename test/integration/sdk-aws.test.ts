import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Broker as Server } from '../../src/broker.js';
import { Broker } from '../../src/sdk/index.js';
import { ROLE_ARN, startAwsBroker } from '../support/aws-broker.js';
import { startAwsEndpoint, type AwsEndpoint } from '../support/aws-endpoint/index.js';
import { ROOT_TOKEN } from '../support/broker.js';
import { freshStoreDatabase } from '../support/pg.js';

let endpoint: AwsEndpoint;
let server: Server;

beforeAll(async () => {
  endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  server = await startAwsBroker(endpoint, await freshStoreDatabase('sdkaws'), {
    deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m', max_ttl: '1h' },
  });
});

afterAll(async () => {
  await server?.close();
  await endpoint?.close();
});

it('lease.awsCredentials() is a credential provider the AWS SDK signs with; once the lease is gone it takes a new lease by itself', async () => {
  const broker = new Broker({ addr: server.url, token: ROOT_TOKEN, env: {} });
  const lease = await broker.lease('aws/creds/deploy');
  expect(lease.renewable).toBe(false);
  const credentials = lease.awsCredentials();
  const sts = new STSClient({ endpoint: endpoint.url, region: endpoint.region, maxAttempts: 1, credentials });
  try {
    const arn = (await sts.send(new GetCallerIdentityCommand({}))).Arn!;
    expect(arn).toContain(':assumed-role/deploy/');
    const first = await credentials();
    expect(first.accessKeyId).toBe(lease.data.access_key);
    expect(first.expiration).toEqual(lease.expiresAt);

    await lease.revoke();
    const second = await credentials();
    expect(second.accessKeyId).not.toBe(first.accessKeyId);
    const fresh = new STSClient({ endpoint: endpoint.url, region: endpoint.region, maxAttempts: 1, credentials });
    expect((await fresh.send(new GetCallerIdentityCommand({}))).Arn).toContain(':assumed-role/deploy/');
    fresh.destroy();
    // The same provider keeps the new lease: no third one.
    expect((await credentials()).accessKeyId).toBe(second.accessKeyId);
  } finally {
    sts.destroy();
    await broker.close();
  }
});
