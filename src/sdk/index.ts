/**
 * The credbroker SDK for pipeline code: `import { Broker } from 'credbroker/sdk'`.
 *
 * @example
 * ```ts
 * import { Broker } from 'credbroker/sdk';
 * import pg from 'pg';
 *
 * const broker = new Broker();
 * await using lease = await broker.lease('warehouse/creds/etl-reader', { ttl: '30m' });
 * const client = new pg.Client(lease.pgConfig());
 * ```
 * @packageDocumentation
 */
export { Broker, IDEMPOTENCY_HEADER, type BrokerOptions, type RequestOptions, type RetryInfo } from './broker.js';
export {
  Lease,
  renewDelay,
  type CredentialData,
  type ExpiringEvent,
  type ExpiringReason,
  type IssuedLease,
  type LeaseClient,
  type LeaseOptions,
} from './lease.js';
export {
  BrokerApiError,
  BrokerUnreachableError,
  LeaseInUseError,
  SdkConfigError,
  SdkError,
  isRetryable,
  type SdkErrorCode,
} from './errors.js';
export { RotatingPgPool, type PgPoolOptions } from './pg.js';
export { pgConfigOf, sslFor } from './pg-config.js';
export {
  awsCredentialProvider,
  type AwsCredentialIdentity,
  type AwsCredentialIdentityProvider,
  type AwsLease,
} from './aws.js';
export { backoffDelay, withRetry, DEFAULT_RETRY, type RetryOptions } from './retry.js';
export type { JwtAuthOptions } from './token-source.js';
export type { ClientTls } from '../client/tls.js';
export type { Method, AnswerBody } from './transport.js';
