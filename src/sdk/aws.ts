import { SdkError } from './errors.js';

/**
 * An AWS credential as the AWS SDK v3 takes it (`@smithy/types` AwsCredentialIdentity).
 *
 * @example
 * ```ts
 * const { accessKeyId, expiration } = await lease.awsCredentials()();
 * ```
 */
export interface AwsCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/**
 * An AWS SDK v3 credential provider (`AwsCredentialIdentityProvider`): the SDK calls it again as
 * `expiration` nears.
 *
 * @example
 * ```ts
 * const sts = new STSClient({ region: 'eu-west-1', credentials: lease.awsCredentials() });
 * ```
 */
export type AwsCredentialIdentityProvider = () => Promise<AwsCredentialIdentity>;

/**
 * What the provider needs of a lease (a Lease is one): kept structural, so this module
 * does not import the lease's.
 *
 * @example
 * ```ts
 * const source: AwsLease = await broker.lease('aws/creds/deploy');
 * ```
 */
export interface AwsLease {
  readonly id: string;
  readonly data: Record<string, unknown>;
  readonly expiresAt: Date;
  readonly revoked: boolean;
  once(event: 'expiring', listener: () => void): unknown;
}

function identityOf(lease: AwsLease): AwsCredentialIdentity {
  const { access_key, secret_key, session_token } = lease.data;
  if (typeof access_key !== 'string' || typeof secret_key !== 'string')
    throw new SdkError(`lease ${lease.id} is not an AWS credential (no access_key and secret_key)`);
  return {
    accessKeyId: access_key,
    secretAccessKey: secret_key,
    ...(typeof session_token === 'string' ? { sessionToken: session_token } : {}),
    expiration: lease.expiresAt,
  };
}

/**
 * Answers with `first`'s keys while it renews; once it can no longer be renewed (its `expiring`
 * event), the next call takes a new lease through `next`. The spent lease is left to run out at
 * its max TTL rather than revoked: a request the SDK signed with its keys may still be in flight.
 *
 * @example
 * ```ts
 * const credentials = awsCredentialProvider(lease, () => broker.lease('aws/creds/deploy'));
 * ```
 */
export function awsCredentialProvider(first: AwsLease, next: () => Promise<AwsLease>): AwsCredentialIdentityProvider {
  let current = first;
  let spent = false;
  let taking: Promise<AwsLease> | undefined;
  const watch = (lease: AwsLease) => lease.once('expiring', () => lease === current && (spent = true));
  watch(first);
  return async () => {
    if (spent || current.revoked) {
      taking ??= next().finally(() => (taking = undefined));
      const lease = await taking;
      if (lease !== current) {
        current = lease;
        spent = false;
        watch(lease);
      }
    }
    return identityOf(current);
  };
}
