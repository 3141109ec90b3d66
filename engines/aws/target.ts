import { GetRolePolicyCommand, PutRolePolicyCommand, type IAMClient } from '@aws-sdk/client-iam';
import {
  AssumeRoleCommand,
  GetFederationTokenCommand,
  GetSessionTokenCommand,
  type STSClient,
} from '@aws-sdk/client-sts';
import type {
  EngineContext,
  HandleFacts,
  IssueRequest,
  IssueResponse,
  JsonValue,
  Limiter,
  OwnedListing,
  PlanRequest,
  RevokeHandle,
  RevokeRequest,
  Target,
} from '../../src/engines.js';
import { InvalidRequest, Semaphore, randomName } from '../../src/engine-kit.js';
import { createClients, describeAwsError, isNoSuchEntity } from './clients.js';
import { listOwnedUsers } from './owned-users.js';
import {
  LEASE_TAG,
  deniesIssuedBefore,
  isDenied,
  parsePolicy,
  withIssuedBefore,
  withRevocations,
  type DenyPolicy,
  type Revocation,
} from './deny-policy.js';
import { createIamUser, deleteIamUser } from './iam-user.js';
import type { AwsMount, AwsRole } from './schema.js';

/** STS's own bounds on a session's duration. */
const STS_MIN_SECONDS = 900;
const FEDERATION_MAX_SECONDS = 129_600;

type AwsHandle =
  | { kind: 'assumed_role'; role_arn: string; session_name: string; token: string; duration: number }
  | { kind: 'federation_token'; name: string; duration: number }
  | { kind: 'session_token'; duration: number }
  | { kind: 'iam_user'; user_name: string; lease_id: string };

const roleNameOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);

/** Runs `work` after every earlier task with the same key: read-modify-write of one role's policy. */
class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(work, work);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => this.tails.get(key) === tail && this.tails.delete(key));
    return result;
  }
}

export class AwsTarget implements Target<AwsRole> {
  private readonly sts: STSClient;
  private readonly iam: IAMClient;
  private readonly calls: Semaphore;
  private readonly policyWrites = new KeyedQueue();

  constructor(
    private readonly mount: AwsMount,
    ctx: EngineContext,
  ) {
    ({ sts: this.sts, iam: this.iam } = createClients(mount, ctx.timeoutMs));
    this.calls = new Semaphore(mount.max_concurrent_calls);
  }

  plan(req: PlanRequest<AwsRole>): RevokeHandle {
    const { role } = req;
    const token = randomName(12);
    if (role.credential_type === 'iam_user') {
      return { kind: 'iam_user', user_name: `cb-${req.roleName}-${token}`.slice(0, 64), lease_id: req.leaseId };
    }
    if (req.ttlSeconds < STS_MIN_SECONDS)
      throw new InvalidRequest(`ttl must be at least ${STS_MIN_SECONDS}s for STS credentials (AWS's minimum)`);
    switch (role.credential_type) {
      case 'assumed_role': {
        if (req.ttlSeconds > role.max_session_duration) {
          throw new InvalidRequest(
            `ttl of ${req.ttlSeconds}s exceeds the role's maximum session duration of ${role.max_session_duration}s`,
          );
        }
        return {
          kind: 'assumed_role',
          role_arn: chooseRoleArn(role.role_arns, req.params.role_arn),
          session_name: `cb-${req.roleName}-${token}`.slice(0, 64),
          token,
          duration: req.ttlSeconds,
        };
      }
      case 'federation_token':
        if (req.ttlSeconds > FEDERATION_MAX_SECONDS)
          throw new InvalidRequest(`ttl must be at most ${FEDERATION_MAX_SECONDS}s for a federation token`);
        return { kind: 'federation_token', name: `cb-${token}`, duration: req.ttlSeconds };
      case 'session_token':
        if (req.ttlSeconds > FEDERATION_MAX_SECONDS)
          throw new InvalidRequest(`ttl must be at most ${FEDERATION_MAX_SECONDS}s for a session token`);
        return { kind: 'session_token', duration: req.ttlSeconds };
    }
  }

  renewable(role: AwsRole): boolean {
    return role.credential_type === 'iam_user'; // an STS session's expiry is fixed when it is issued
  }

  /** An IAM user has no expiry of its own: the lease's expiry is the only clock, nothing to tell AWS. */
  async renew(): Promise<void> {}

  describe(handle: RevokeHandle): HandleFacts {
    const h = handle as AwsHandle;
    if (h.kind === 'federation_token' || h.kind === 'session_token') {
      return {
        revocableBeforeExpiry: false,
        note: `AWS offers no way to revoke a single ${h.kind.replace('_', ' ')} before it expires`,
      };
    }
    return { revocableBeforeExpiry: true };
  }

  async issue(req: IssueRequest<AwsRole>): Promise<IssueResponse> {
    const h = req.handle as AwsHandle;
    const role = req.role;
    return this.aws(async () => {
      if (h.kind === 'iam_user' && role.credential_type === 'iam_user') {
        return { data: await createIamUser(this.iam, role, h.user_name, h.lease_id, req.secrets) };
      }
      const out = await this.issueSts(h, role);
      req.secrets.add(out.secret_key as string);
      req.secrets.add(out.session_token as string);
      return { data: out };
    });
  }

  private async issueSts(h: AwsHandle, role: AwsRole): Promise<Record<string, JsonValue>> {
    if (h.kind === 'assumed_role' && role.credential_type === 'assumed_role') {
      const tags = Object.entries(role.session_tags ?? {}).map(([Key, Value]) => ({ Key, Value }));
      const res = await this.sts.send(
        new AssumeRoleCommand({
          RoleArn: h.role_arn,
          RoleSessionName: h.session_name,
          DurationSeconds: h.duration,
          Policy: role.policy_document,
          PolicyArns: role.policy_arns?.map((arn) => ({ arn })),
          ExternalId: role.external_id,
          Tags: [{ Key: LEASE_TAG, Value: h.token }, ...tags],
        }),
      );
      return stsData(res.Credentials, res.AssumedRoleUser?.Arn);
    }
    if (h.kind === 'federation_token' && role.credential_type === 'federation_token') {
      const res = await this.sts.send(
        new GetFederationTokenCommand({
          Name: h.name,
          DurationSeconds: h.duration,
          Policy: role.policy_document,
          PolicyArns: role.policy_arns?.map((arn) => ({ arn })),
        }),
      );
      return stsData(res.Credentials, res.FederatedUser?.Arn);
    }
    if (h.kind === 'session_token') {
      const res = await this.sts.send(new GetSessionTokenCommand({ DurationSeconds: h.duration }));
      return stsData(res.Credentials, undefined);
    }
    throw new Error(`the role's credential_type no longer matches this lease (${h.kind})`);
  }

  async revoke(req: RevokeRequest): Promise<void> {
    // AWS calls are bounded inside by this.calls; one revocation needs no other bound.
    const [error] = await this.revokeMany([req], { limit: 1, run: (task) => task() });
    if (error) throw error;
  }

  /** Sessions of one AWS role are denied together, in one policy write per role. */
  async revokeMany(reqs: RevokeRequest[], slots: Limiter): Promise<(Error | null)[]> {
    const errors: (Error | null)[] = reqs.map(() => null);
    const byRole = new Map<string, { index: number; revocation: Revocation }[]>();
    const others: Promise<void>[] = [];
    reqs.forEach((req, index) => {
      const h = req.handle as AwsHandle;
      if (h.kind === 'assumed_role') {
        if (req.expiresAt <= new Date()) return; // expired on its own: no AWS call
        const list = byRole.get(h.role_arn) ?? [];
        list.push({ index, revocation: { token: h.token, expiresAt: req.expiresAt } });
        byRole.set(h.role_arn, list);
      } else if (h.kind === 'iam_user') {
        others.push(
          slots
            .run(() => this.aws(() => deleteIamUser(this.iam, h.user_name)))
            .catch((err: Error) => {
              errors[index] = err;
            }),
        );
      }
      // federation and session tokens: nothing AWS can do; describe() says so.
    });
    for (const [roleArn, entries] of byRole) {
      others.push(
        slots
          .run(() =>
            this.denySessions(
              roleArn,
              entries.map((e) => e.revocation),
            ),
          )
          .catch((err: Error) => {
            for (const e of entries) errors[e.index] = err;
          }),
      );
    }
    await Promise.all(others);
    return errors;
  }

  /** Incident: every session of the role's AWS roles issued before `before` is denied, whoever started it. */
  async revokeIssuedBefore(role: AwsRole, before: Date): Promise<boolean> {
    if (role.credential_type !== 'assumed_role') return false;
    for (const roleArn of role.role_arns) {
      await this.updateDenyPolicy(
        roleArn,
        (current) => deniesIssuedBefore(current, before),
        (current, now) => withIssuedBefore(current, before, role.max_session_duration, now),
        (written) => deniesIssuedBefore(written, before),
      );
    }
    return true;
  }

  private denySessions(roleArn: string, revocations: Revocation[]): Promise<void> {
    return this.updateDenyPolicy(
      roleArn,
      (current) => revocations.every((r) => isDenied(current, r.token)),
      (current, now) => withRevocations(current, revocations, now),
      (written) => revocations.every((r) => r.expiresAt <= new Date() || isDenied(written, r.token)),
    );
  }

  /**
   * Read-modify-write of the role's deny policy, serialized per role in this process, and checked
   * after: another replica writing the same policy at the same moment could have replaced ours.
   */
  private updateDenyPolicy(
    roleArn: string,
    alreadyDone: (current: DenyPolicy) => boolean,
    change: (current: DenyPolicy, now: Date) => DenyPolicy,
    stuck: (written: DenyPolicy) => boolean,
  ): Promise<void> {
    const RoleName = roleNameOf(roleArn);
    const PolicyName = this.mount.deny_policy_name;
    return this.policyWrites.run(RoleName, () =>
      this.aws(async () => {
        const current = await this.readPolicy(RoleName, PolicyName);
        if (alreadyDone(current)) return; // revoked twice: nothing to add
        await this.iam.send(
          new PutRolePolicyCommand({
            RoleName,
            PolicyName,
            PolicyDocument: JSON.stringify(change(current, new Date())),
          }),
        );
        if (!stuck(await this.readPolicy(RoleName, PolicyName)))
          throw new Error(`a concurrent write replaced the deny policy on role ${RoleName}; will retry`);
      }),
    );
  }

  private async readPolicy(RoleName: string, PolicyName: string) {
    try {
      const res = await this.iam.send(new GetRolePolicyCommand({ RoleName, PolicyName }));
      return parsePolicy(res.PolicyDocument ? decodeURIComponent(res.PolicyDocument) : undefined);
    } catch (err) {
      if (isNoSuchEntity(err)) return parsePolicy(undefined);
      throw err;
    }
  }

  /** Bounds concurrent AWS work and turns SDK errors into AWS's code and message. */
  /** IAM users named as this engine names them, under its paths; STS sessions are not objects to list. */
  listOwned(roles: AwsRole[]): Promise<OwnedListing> {
    return this.aws(() => listOwnedUsers(this.iam, roles));
  }

  private async aws<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await this.calls.run(work);
    } catch (err) {
      if (err instanceof InvalidRequest) throw err;
      throw new Error(describeAwsError(err));
    }
  }

  async close(): Promise<void> {
    this.sts.destroy();
    this.iam.destroy();
  }
}

function chooseRoleArn(allowed: string[], requested: unknown): string {
  if (requested === undefined || requested === '') {
    if (allowed.length === 1) return allowed[0]!;
    throw new InvalidRequest('role_arn is required: this role allows several; pass one of its role_arns');
  }
  if (typeof requested !== 'string' || !allowed.includes(requested))
    throw new InvalidRequest("role_arn is not one of this role's role_arns");
  return requested;
}

function stsData(
  credentials: { AccessKeyId?: string; SecretAccessKey?: string; SessionToken?: string; Expiration?: Date } | undefined,
  arn: string | undefined,
) {
  if (!credentials?.AccessKeyId || !credentials.SecretAccessKey) throw new Error('STS answered without credentials');
  return {
    access_key: credentials.AccessKeyId,
    secret_key: credentials.SecretAccessKey,
    session_token: credentials.SessionToken ?? null,
    arn: arn ?? null,
    expiration: credentials.Expiration ? credentials.Expiration.toISOString() : null,
  };
}
