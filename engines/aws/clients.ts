import { IAMClient } from '@aws-sdk/client-iam';
import { STSClient } from '@aws-sdk/client-sts';
import type { AwsMount } from './schema.js';

/**
 * The SDK clients of one mount. Throttling and transient errors are retried by the SDK's own
 * standard retry strategy (with backoff); the broker does not retry AWS calls by hand.
 */
export function createClients(mount: AwsMount, timeoutMs: number): { sts: STSClient; iam: IAMClient } {
  const common = {
    region: mount.region,
    maxAttempts: 4,
    ...(mount.endpoint ? { endpoint: mount.endpoint } : {}),
    ...(mount.access_key_id && mount.secret_access_key
      ? {
          credentials: {
            accessKeyId: mount.access_key_id,
            secretAccessKey: mount.secret_access_key,
            sessionToken: mount.session_token,
          },
        }
      : {}),
    requestHandler: { requestTimeout: timeoutMs, connectionTimeout: timeoutMs },
  };
  // IAM is a global service signed for us-east-1 (aws-cn and gov partitions aside).
  return {
    sts: new STSClient(common),
    iam: new IAMClient({ ...common, region: mount.region.startsWith('cn-') ? mount.region : 'us-east-1' }),
  };
}

/** AWS's error code and message, e.g. "AccessDenied: User … is not authorized to perform …". */
export function describeAwsError(err: unknown): string {
  const e = err as { name?: string; Code?: string; message?: string };
  const code = e.Code ?? e.name ?? 'Error';
  return `${code}: ${e.message ?? String(err)}`;
}

export function isNoSuchEntity(err: unknown): boolean {
  const e = err as { name?: string; Code?: string };
  return e.name === 'NoSuchEntityException' || e.name === 'NoSuchEntity' || e.Code === 'NoSuchEntity';
}
