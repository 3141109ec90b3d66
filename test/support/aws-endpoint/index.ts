// test-only: never shipped
/**
 * A local stand-in for AWS STS + IAM that the real @aws-sdk v3 clients talk to via `endpoint: ep.url`.
 * SigV4 is verified for real; see auth.ts (rejections), sts-actions.ts, iam-actions.ts, policy.ts (Deny evaluator).
 *
 *   const ep = await startAwsEndpoint({ roles: [{ arn: 'arn:aws:iam::123456789012:role/app' }] });
 *   const sts = new STSClient({ endpoint: ep.url, region: ep.region, credentials: ep.baseCredentials });
 */
import type { AddressInfo } from 'node:net';
import { createAwsServer, type AwsCall } from './server.js';
import { AwsState } from './state.js';

export { AwsState, ACCOUNT_ID } from './state.js';
export type { AccessKey, Group, IamUser, Role, Session, SessionKind } from './state.js';
export type { AwsCall } from './server.js';

export interface AwsEndpointOptions {
  /** Roles that exist (AssumeRole / *RolePolicy); maxSessionDuration defaults to 3600 (AWS allows 3600..43200). */
  roles?: { arn: string; maxSessionDuration?: number }[];
  /** The endpoint's clock runs this many seconds ahead of the machine's (negative: behind). */
  clockSkewSeconds?: number;
  /**
   * Clock shown in the Date response header. 'server-clock' (default) is what AWS does, and lets the SDK
   * correct its clock after a skew rejection and retry successfully; 'real-clock' hides the skew from the
   * SDK, so skew rejections stick.
   */
  dateHeader?: 'server-clock' | 'real-clock';
}

export interface AwsEndpoint {
  url: string;
  region: string;
  /** Base credentials the broker signs with (an IAM user 'credbroker' in account 123456789012). */
  baseCredentials: { accessKeyId: string; secretAccessKey: string };
  /** Every call received, in arrival order (SDK retries are separate entries). */
  calls: AwsCall[];
  state: AwsState;
  /** The next n calls (whatever they are) answer 400 Throttling "Rate exceeded". */
  throttleNext(n: number): void;
  /** Changes the endpoint's clock skew from now on. */
  setClockSkew(seconds: number): void;
  close(): Promise<void>;
}

export async function startAwsEndpoint(opts: AwsEndpointOptions = {}): Promise<AwsEndpoint> {
  const region = 'us-east-1';
  const state = new AwsState();
  state.clockSkewSeconds = opts.clockSkewSeconds ?? 0;
  for (const role of opts.roles ?? []) state.addRole(role.arn, role.maxSessionDuration);
  state.createUser('credbroker');
  const key = state.createAccessKey('credbroker');

  const calls: AwsCall[] = [];
  const throttle = { remaining: 0 };
  const server = createAwsServer({ state, region, calls, throttle, dateHeader: opts.dateHeader ?? 'server-clock' });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    region,
    baseCredentials: { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey },
    calls,
    state,
    throttleNext(n: number) {
      throttle.remaining = n;
    },
    setClockSkew(seconds: number) {
      state.clockSkewSeconds = seconds;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
