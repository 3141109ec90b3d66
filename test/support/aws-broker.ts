import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import type { JsonValue } from '../../src/engines.js';
import { createLogger } from '../../src/log.js';
import { ROOT_TOKEN } from './broker.js';
import type { AwsEndpoint } from './aws-endpoint/index.js';
import { pgUrl } from './pg.js';

export const ROLE_ARN = 'arn:aws:iam::123456789012:role/deploy';
export const OTHER_ROLE_ARN = 'arn:aws:iam::123456789012:role/audit';

/** A broker whose mount `aws` talks to the local endpoint with the real SDK. */
export async function startAwsBroker(
  endpoint: AwsEndpoint,
  storeDatabase: string,
  roles: Record<string, Record<string, unknown>>,
): Promise<Broker> {
  const config = configSchema.parse({
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(storeDatabase) },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    engine_timeout: 10,
    reaper: { pending_grace: 30 },
    // The store's audit table, so tests can see the events of revocations.
    audit: { hmac_key: 'aws-test-audit-hmac-key-0123456789', postgres: true },
    mounts: {
      aws: {
        type: 'aws',
        region: endpoint.region,
        endpoint: endpoint.url,
        access_key_id: endpoint.baseCredentials.accessKeyId,
        secret_access_key: endpoint.baseCredentials.secretAccessKey,
        roles,
      },
    },
  });
  return startBroker(config, { log: createLogger('silent'), reaper: false });
}

/** Signs GetCallerIdentity with the issued keys; resolves to the caller's ARN, or throws AWS's refusal. */
export async function callerArn(endpoint: AwsEndpoint, data: Record<string, JsonValue>): Promise<string> {
  const sts = new STSClient({
    endpoint: endpoint.url,
    region: endpoint.region,
    maxAttempts: 1,
    credentials: {
      accessKeyId: String(data.access_key),
      secretAccessKey: String(data.secret_key),
      sessionToken: data.session_token ? String(data.session_token) : undefined,
    },
  });
  try {
    return (await sts.send(new GetCallerIdentityCommand({}))).Arn!;
  } finally {
    sts.destroy();
  }
}
