import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AssumeRoleCommand,
  GetCallerIdentityCommand,
  GetFederationTokenCommand,
  GetSessionTokenCommand,
  STSClient,
  type Credentials,
} from '@aws-sdk/client-sts';
import {
  AddUserToGroupCommand,
  AttachUserPolicyCommand,
  CreateAccessKeyCommand,
  CreateUserCommand,
  DeleteAccessKeyCommand,
  DeleteRolePolicyCommand,
  DeleteUserCommand,
  DeleteUserPolicyCommand,
  DetachUserPolicyCommand,
  GetRolePolicyCommand,
  GetUserCommand,
  GetUserPolicyCommand,
  IAMClient,
  ListAccessKeysCommand,
  ListAttachedUserPoliciesCommand,
  ListGroupsForUserCommand,
  ListRolePoliciesCommand,
  ListUserPoliciesCommand,
  PutRolePolicyCommand,
  PutUserPolicyCommand,
  RemoveUserFromGroupCommand,
} from '@aws-sdk/client-iam';
import { startAwsEndpoint, type AwsEndpoint } from '../support/aws-endpoint/index.js';

/**
 * The local STS/IAM endpoint, proven with the real SDK v3 clients: every request below is serialized,
 * SigV4-signed and parsed by @aws-sdk itself.
 */

const ROLE_ARN = 'arn:aws:iam::123456789012:role/credbroker-test';
const LONG_ROLE_ARN = 'arn:aws:iam::123456789012:role/ops/credbroker-long';

type Creds = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };

const stsClient = (ep: AwsEndpoint, credentials: Creds = ep.baseCredentials, extra: Record<string, unknown> = {}) =>
  new STSClient({ endpoint: ep.url, region: 'us-east-1', credentials, ...extra });
const iamClient = (ep: AwsEndpoint, credentials: Creds = ep.baseCredentials) =>
  new IAMClient({ endpoint: ep.url, region: 'us-east-1', credentials });
const fromSts = (c: Credentials | undefined): Creds => ({
  accessKeyId: c!.AccessKeyId!,
  secretAccessKey: c!.SecretAccessKey!,
  sessionToken: c!.SessionToken!,
});

/** The rejection of a promise that must reject (fails the test if it resolves). */
async function failure(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err) => err,
  );
}

const whoAmI = (ep: AwsEndpoint, creds?: Creds) => stsClient(ep, creds).send(new GetCallerIdentityCommand({}));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('aws-endpoint: SigV4 verification', () => {
  let ep: AwsEndpoint;
  beforeAll(async () => {
    ep = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  });
  afterAll(() => ep.close());

  it('answers GetCallerIdentity signed with the base keys', async () => {
    const out = await whoAmI(ep);
    expect(out.Arn).toBe('arn:aws:iam::123456789012:user/credbroker');
    expect(out.Account).toBe('123456789012');
    expect(out.UserId).toMatch(/^AIDA[A-Z0-9]{17}$/);
    expect(out.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ep.calls.at(-1)).toMatchObject({
      service: 'sts',
      action: 'GetCallerIdentity',
      accessKeyId: ep.baseCredentials.accessKeyId,
      status: 200,
    });
    expect(ep.calls.at(-1)!.params).toMatchObject({ Action: 'GetCallerIdentity', Version: '2011-06-15' });
  });

  it('rejects a wrong secret with SignatureDoesNotMatch', async () => {
    const secret = ep.baseCredentials.secretAccessKey;
    // Another last character: with a fixed replacement, one secret in 62 already ends in it.
    const err = await failure(
      whoAmI(ep, { ...ep.baseCredentials, secretAccessKey: secret.slice(0, -1) + (secret.endsWith('x') ? 'y' : 'x') }),
    );
    expect(err.name).toBe('SignatureDoesNotMatch');
    expect(err.$metadata.httpStatusCode).toBe(403);
    expect(err.message).toMatch(/does not match the signature you provided/);
    expect(ep.calls.at(-1)).toMatchObject({ status: 403, code: 'SignatureDoesNotMatch' });
  });

  it('rejects a body changed after signing', async () => {
    const client = stsClient(ep);
    client.middlewareStack.add(
      (next) => async (args: any) => {
        args.request.body = String(args.request.body).replace('RoleSessionName=honest', 'RoleSessionName=forged');
        return next(args);
      },
      { step: 'deserialize', priority: 'low' },
    );
    const err = await failure(client.send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'honest' })));
    expect(err.name).toBe('SignatureDoesNotMatch');
    expect(ep.calls.at(-1)!.params.RoleSessionName).toBe('forged');
    expect(ep.state.sessions.size).toBe(0);
  });

  it('rejects a signed header changed after signing', async () => {
    const client = stsClient(ep);
    client.middlewareStack.add(
      (next) => async (args: any) => {
        args.request.headers['amz-sdk-invocation-id'] = '00000000-0000-4000-8000-000000000000';
        return next(args);
      },
      { step: 'deserialize', priority: 'low' },
    );
    const err = await failure(client.send(new GetCallerIdentityCommand({})));
    expect(err.name).toBe('SignatureDoesNotMatch');
  });

  it('rejects an unknown access key with InvalidClientTokenId', async () => {
    const err = await failure(whoAmI(ep, { accessKeyId: 'AKIAUNKNOWNKEY000000', secretAccessKey: 'whatever' }));
    expect(err.name).toBe('InvalidClientTokenId');
    expect(err.$metadata.httpStatusCode).toBe(403);
  });

  it('rejects a credential scope for another region', async () => {
    const client = new STSClient({ endpoint: ep.url, region: 'eu-west-1', credentials: ep.baseCredentials });
    const err = await failure(client.send(new GetCallerIdentityCommand({})));
    expect(err.name).toBe('SignatureDoesNotMatch');
    expect(err.message).toMatch(/scoped to a valid region/);
  });

  it('rejects a request without Authorization', async () => {
    const res = await fetch(ep.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'Action=GetCallerIdentity&Version=2011-06-15',
    });
    expect(res.status).toBe(403);
    expect(await res.text()).toMatch(/<Code>MissingAuthenticationToken<\/Code>/);
  });
});

describe('aws-endpoint: clock skew', () => {
  it('rejects a request more than 15 minutes off the endpoint clock', async () => {
    // 'real-clock' keeps the skew out of the Date header, so the SDK cannot correct itself.
    const ep = await startAwsEndpoint({ clockSkewSeconds: 3600, dateHeader: 'real-clock' });
    try {
      const err = await failure(whoAmI(ep));
      expect(err.name).toBe('SignatureDoesNotMatch');
      expect(err.message).toMatch(/^Signature expired: \d{8}T\d{6}Z is now earlier than/);
      expect(ep.calls.map((c) => c.status)).toEqual([403]);

      ep.setClockSkew(-3600);
      expect((await failure(whoAmI(ep))).message).toMatch(/^Signature not yet current/);
      ep.setClockSkew(600); // within the 15-minute window
      expect((await whoAmI(ep)).Arn).toMatch(/user\/credbroker$/);
    } finally {
      await ep.close();
    }
  });

  it('lets the SDK correct its clock from the Date header (what AWS does) and retry', async () => {
    const ep = await startAwsEndpoint({ clockSkewSeconds: 3600 });
    try {
      expect((await whoAmI(ep)).Arn).toMatch(/user\/credbroker$/);
      expect(ep.calls.map((c) => [c.status, c.code])).toEqual([
        [403, 'SignatureDoesNotMatch'],
        [200, undefined],
      ]);
      const off = await failure(
        stsClient(ep, undefined, { disableClockSkewCorrection: true }).send(new GetCallerIdentityCommand({})),
      );
      expect(off.name).toBe('SignatureDoesNotMatch');
    } finally {
      await ep.close();
    }
  });
});

describe('aws-endpoint: STS', () => {
  let ep: AwsEndpoint;
  beforeAll(async () => {
    ep = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }, { arn: LONG_ROLE_ARN, maxSessionDuration: 7200 }] });
  });
  afterAll(() => ep.close());

  it('AssumeRole returns credentials that sign as the assumed role', async () => {
    const before = Date.now();
    const out = await stsClient(ep).send(
      new AssumeRoleCommand({
        RoleArn: ROLE_ARN,
        RoleSessionName: 'lease-1',
        DurationSeconds: 900,
        Tags: [{ Key: 'credbroker-lease', Value: 'abc' }],
        SourceIdentity: 'alice',
        ExternalId: 'ext-123',
        PolicyArns: [{ arn: 'arn:aws:iam::aws:policy/ReadOnlyAccess' }],
        Policy: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: '*' }],
        }),
      }),
    );
    expect(out.Credentials!.AccessKeyId).toMatch(/^ASIA[A-Z0-9]{16}$/);
    expect(out.Credentials!.Expiration).toBeInstanceOf(Date);
    expect(out.Credentials!.Expiration!.getTime()).toBeGreaterThan(before + 895_000);
    expect(out.Credentials!.Expiration!.getTime()).toBeLessThanOrEqual(Date.now() + 900_000);
    expect(out.AssumedRoleUser!.Arn).toBe('arn:aws:sts::123456789012:assumed-role/credbroker-test/lease-1');
    expect(out.AssumedRoleUser!.AssumedRoleId).toMatch(/^AROA[A-Z0-9]{17}:lease-1$/);
    expect(out.PackedPolicySize).toBeGreaterThan(0);
    expect(out.SourceIdentity).toBe('alice');

    const session = ep.state.sessions.get(out.Credentials!.AccessKeyId!)!;
    expect(session).toMatchObject({
      kind: 'assumed-role',
      roleName: 'credbroker-test',
      externalId: 'ext-123',
      userName: 'credbroker',
    });
    expect(session.tags).toEqual([{ Key: 'credbroker-lease', Value: 'abc' }]);
    expect(session.policyArns).toEqual(['arn:aws:iam::aws:policy/ReadOnlyAccess']);

    const me = await whoAmI(ep, fromSts(out.Credentials));
    expect(me.Arn).toBe(out.AssumedRoleUser!.Arn);
    expect(me.UserId).toBe(out.AssumedRoleUser!.AssumedRoleId);
    expect(ep.calls.at(-1)!.accessKeyId).toBe(out.Credentials!.AccessKeyId);

    // Temporary keys need their session token, and stop working once expired.
    const noToken = await failure(whoAmI(ep, { ...fromSts(out.Credentials), sessionToken: undefined }));
    expect(noToken.name).toBe('InvalidClientTokenId');
    const badToken = await failure(
      whoAmI(ep, { ...fromSts(out.Credentials), sessionToken: 'x' + out.Credentials!.SessionToken }),
    );
    expect(badToken.name).toBe('InvalidClientTokenId');
    ep.state.expireSession(out.Credentials!.AccessKeyId!);
    const expired = await failure(whoAmI(ep, fromSts(out.Credentials)));
    expect(expired.name).toBe('ExpiredToken'); // the common error code, not STS's modeled ExpiredTokenException
    expect(expired.message).toBe('The security token included in the request is expired');
    expect(expired.$metadata.httpStatusCode).toBe(403);
  });

  it('caps DurationSeconds at the role MaxSessionDuration', async () => {
    const err = await failure(
      stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 's1', DurationSeconds: 3601 })),
    );
    expect(err.name).toBe('ValidationError');
    expect(err.$metadata.httpStatusCode).toBe(400);
    expect(err.message).toBe('The requested DurationSeconds exceeds the MaxSessionDuration set for this role.');

    const long = await stsClient(ep).send(
      new AssumeRoleCommand({ RoleArn: LONG_ROLE_ARN, RoleSessionName: 's1', DurationSeconds: 7200 }),
    );
    expect(long.AssumedRoleUser!.Arn).toBe('arn:aws:sts::123456789012:assumed-role/credbroker-long/s1');

    const short = await failure(
      stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 's1', DurationSeconds: 899 })),
    );
    expect(short.name).toBe('ValidationError');
    expect(short.message).toMatch(
      /at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900/,
    );
  });

  it('validates RoleSessionName and refuses roles that do not exist', async () => {
    const bad = await failure(
      stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'has space' })),
    );
    expect(bad.name).toBe('ValidationError');
    expect(bad.message).toMatch(/^1 validation error detected: Value 'has space' at 'roleSessionName'/);
    const short = await failure(stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'x' })));
    expect(short.message).toMatch(/Member must have length greater than or equal to 2/);

    const denied = await failure(
      stsClient(ep).send(
        new AssumeRoleCommand({ RoleArn: 'arn:aws:iam::123456789012:role/nope', RoleSessionName: 'ok' }),
      ),
    );
    expect(denied.name).toBe('AccessDenied');
    expect(denied.$metadata.httpStatusCode).toBe(403);
    expect(denied.message).toMatch(
      /is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role\/nope/,
    );
  });

  it('refuses malformed and oversized session policies', async () => {
    const malformed = await failure(
      stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'p1', Policy: '{"Version": ' })),
    );
    expect(malformed.name).toBe('MalformedPolicyDocumentException');
    expect(malformed.Error.Code).toBe('MalformedPolicyDocument');
    expect(malformed.$metadata.httpStatusCode).toBe(400);

    const statement = {
      Effect: 'Allow',
      Action: 's3:GetObject',
      Resource: 'arn:aws:s3:::bucket-with-a-long-name/some/prefix/*',
    };
    const big = JSON.stringify({ Version: '2012-10-17', Statement: Array(40).fill(statement) });
    const tooLarge = await failure(
      stsClient(ep).send(new AssumeRoleCommand({ RoleArn: ROLE_ARN, RoleSessionName: 'p2', Policy: big })),
    );
    expect(tooLarge.name).toBe('PackedPolicyTooLargeException');
    expect(tooLarge.message).toMatch(/^Packed policy consumes \d+% of allotted space/);
  });

  it('GetFederationToken and GetSessionToken issue working credentials, with their AWS restrictions', async () => {
    const fed = await stsClient(ep).send(new GetFederationTokenCommand({ Name: 'bob', DurationSeconds: 900 }));
    expect(fed.FederatedUser).toEqual({
      FederatedUserId: '123456789012:bob',
      Arn: 'arn:aws:sts::123456789012:federated-user/bob',
    });
    expect((await whoAmI(ep, fromSts(fed.Credentials))).Arn).toBe('arn:aws:sts::123456789012:federated-user/bob');
    const fedIam = await failure(
      iamClient(ep, fromSts(fed.Credentials)).send(new GetUserCommand({ UserName: 'credbroker' })),
    );
    expect(fedIam.name).toBe('AccessDenied');

    const tok = await stsClient(ep).send(new GetSessionTokenCommand({ DurationSeconds: 900 }));
    const me = await whoAmI(ep, fromSts(tok.Credentials));
    expect(me.Arn).toBe('arn:aws:iam::123456789012:user/credbroker');
    const chained = await failure(stsClient(ep, fromSts(tok.Credentials)).send(new GetSessionTokenCommand({})));
    expect(chained.name).toBe('AccessDenied');

    const tooLong = await failure(
      stsClient(ep).send(new GetFederationTokenCommand({ Name: 'bob', DurationSeconds: 129601 })),
    );
    expect(tooLong.name).toBe('ValidationError');
  });
});

describe('aws-endpoint: Deny statements in role inline policies', () => {
  let ep: AwsEndpoint;
  beforeAll(async () => {
    ep = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  });
  afterAll(() => ep.close());

  const assume = async (name: string, lease: string, sourceIdentity?: string) =>
    fromSts(
      (
        await stsClient(ep).send(
          new AssumeRoleCommand({
            RoleArn: ROLE_ARN,
            RoleSessionName: name,
            Tags: [{ Key: 'credbroker-lease', Value: lease }],
            SourceIdentity: sourceIdentity,
          }),
        )
      ).Credentials,
    );
  const deny = (condition: unknown) =>
    JSON.stringify({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Deny', Action: '*', Resource: '*', Condition: condition }],
    });

  it('a Deny on aws:PrincipalTag cuts that session only, until the policy is deleted', async () => {
    const a = await assume('sess-a', 'lease-a');
    const b = await assume('sess-b', 'lease-b');
    const iam = iamClient(ep);
    const doc = deny({ StringEquals: { 'aws:PrincipalTag/credbroker-lease': 'lease-a' } });
    await iam.send(
      new PutRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'revoke-lease-a', PolicyDocument: doc }),
    );

    const refused = await failure(whoAmI(ep, a));
    expect(refused.name).toBe('AccessDenied');
    expect(refused.$metadata.httpStatusCode).toBe(403);
    expect(refused.message).toMatch(
      /assumed-role\/credbroker-test\/sess-a is not authorized to perform: sts:GetCallerIdentity/,
    );
    expect((await whoAmI(ep, b)).Arn).toMatch(/assumed-role\/credbroker-test\/sess-b$/);

    const got = await iam.send(new GetRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'revoke-lease-a' }));
    expect(got.PolicyDocument).toBe(encodeURIComponent(doc));
    expect(JSON.parse(decodeURIComponent(got.PolicyDocument!))).toEqual(JSON.parse(doc));
    expect((await iam.send(new ListRolePoliciesCommand({ RoleName: 'credbroker-test' }))).PolicyNames).toEqual([
      'revoke-lease-a',
    ]);

    await iam.send(new DeleteRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'revoke-lease-a' }));
    expect((await whoAmI(ep, a)).Arn).toMatch(/sess-a$/);
    expect((await iam.send(new ListRolePoliciesCommand({ RoleName: 'credbroker-test' }))).PolicyNames).toEqual([]);
  });

  it('matches StringLike on sts:SourceIdentity and ignores statements with unsupported operators', async () => {
    const a = await assume('si-a', 'x', 'broker-lease-17');
    const b = await assume('si-b', 'y', 'other');
    const iam = iamClient(ep);
    await iam.send(
      new PutRolePolicyCommand({
        RoleName: 'credbroker-test',
        PolicyName: 'unsupported',
        PolicyDocument: deny({ StringNotEquals: { 'aws:PrincipalTag/credbroker-lease': 'zzz' } }),
      }),
    );
    expect((await whoAmI(ep, a)).Arn).toMatch(/si-a$/);
    await iam.send(
      new PutRolePolicyCommand({
        RoleName: 'credbroker-test',
        PolicyName: 'by-source',
        PolicyDocument: deny({ StringLike: { 'sts:SourceIdentity': 'broker-lease-*' } }),
      }),
    );
    expect((await failure(whoAmI(ep, a))).name).toBe('AccessDenied');
    expect((await whoAmI(ep, b)).Arn).toMatch(/si-b$/);
    await iam.send(new DeleteRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'by-source' }));
    await iam.send(new DeleteRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'unsupported' }));
  });

  it('a DateLessThan aws:TokenIssueTime Deny cuts every session issued before the cutoff', async () => {
    const a = await assume('old-a', 'a');
    const b = await assume('old-b', 'b');
    await sleep(5);
    const cutoff = new Date().toISOString();
    await sleep(5);
    await iamClient(ep).send(
      new PutRolePolicyCommand({
        RoleName: 'credbroker-test',
        PolicyName: 'revoke-older',
        PolicyDocument: deny({ DateLessThan: { 'aws:TokenIssueTime': cutoff } }),
      }),
    );
    const c = await assume('new-c', 'c');

    expect((await failure(whoAmI(ep, a))).name).toBe('AccessDenied');
    expect((await failure(whoAmI(ep, b))).name).toBe('AccessDenied');
    expect((await whoAmI(ep, c)).Arn).toMatch(/new-c$/);
    // Long-term keys are not subject to the role's policies.
    expect((await whoAmI(ep)).Arn).toMatch(/user\/credbroker$/);
  });
});

describe('aws-endpoint: IAM', () => {
  let ep: AwsEndpoint;
  beforeAll(async () => {
    ep = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  });
  afterAll(() => ep.close());

  it('CreateUser + CreateAccessKey keys work; after DeleteAccessKey + DeleteUser they are rejected', async () => {
    const iam = iamClient(ep);
    const created = await iam.send(
      new CreateUserCommand({
        UserName: 'cb-lease-1',
        Path: '/credbroker/',
        PermissionsBoundary: 'arn:aws:iam::123456789012:policy/boundary',
        Tags: [{ Key: 'credbroker-lease', Value: 'l1' }],
      }),
    );
    expect(created.User).toMatchObject({
      UserName: 'cb-lease-1',
      Path: '/credbroker/',
      Arn: 'arn:aws:iam::123456789012:user/credbroker/cb-lease-1',
      PermissionsBoundary: {
        PermissionsBoundaryType: 'Policy',
        PermissionsBoundaryArn: 'arn:aws:iam::123456789012:policy/boundary',
      },
      Tags: [{ Key: 'credbroker-lease', Value: 'l1' }],
    });
    expect(created.User!.CreateDate).toBeInstanceOf(Date);
    expect((await iam.send(new GetUserCommand({ UserName: 'cb-lease-1' }))).User!.UserId).toBe(created.User!.UserId);
    const dup = await failure(iam.send(new CreateUserCommand({ UserName: 'CB-LEASE-1' })));
    expect(dup.name).toBe('EntityAlreadyExistsException');

    expect((await iam.send(new ListAccessKeysCommand({ UserName: 'cb-lease-1' }))).AccessKeyMetadata).toEqual([]);
    const { AccessKey: key } = await iam.send(new CreateAccessKeyCommand({ UserName: 'cb-lease-1' }));
    expect(key).toMatchObject({ UserName: 'cb-lease-1', Status: 'Active' });
    expect(key!.AccessKeyId).toMatch(/^AKIA[A-Z0-9]{16}$/);
    expect(key!.SecretAccessKey).toHaveLength(40);
    const keyCreds = { accessKeyId: key!.AccessKeyId!, secretAccessKey: key!.SecretAccessKey! };
    expect((await whoAmI(ep, keyCreds)).Arn).toBe('arn:aws:iam::123456789012:user/credbroker/cb-lease-1');
    const listed = await iam.send(new ListAccessKeysCommand({ UserName: 'cb-lease-1' }));
    expect(listed.AccessKeyMetadata!.map((k) => k.AccessKeyId)).toEqual([key!.AccessKeyId]);
    expect(listed.IsTruncated).toBe(false);

    const conflict = await failure(iam.send(new DeleteUserCommand({ UserName: 'cb-lease-1' })));
    expect(conflict.name).toBe('DeleteConflictException');
    expect(conflict.$metadata.httpStatusCode).toBe(409);
    expect(conflict.message).toBe('Cannot delete entity, must delete access keys first.');

    await iam.send(new DeleteAccessKeyCommand({ UserName: 'cb-lease-1', AccessKeyId: key!.AccessKeyId! }));
    await iam.send(new DeleteUserCommand({ UserName: 'cb-lease-1' }));
    const gone = await failure(whoAmI(ep, keyCreds));
    expect(gone.name).toBe('InvalidClientTokenId');
    const missing = await failure(iam.send(new GetUserCommand({ UserName: 'cb-lease-1' })));
    expect(missing.name).toBe('NoSuchEntityException');
    expect(missing.$metadata.httpStatusCode).toBe(404);
    expect(
      ep.calls.filter((c) => c.service === 'iam').every((c) => c.accessKeyId === ep.baseCredentials.accessKeyId),
    ).toBe(true);
  });

  it('DeleteUser refuses while policies or groups remain, like AWS', async () => {
    const iam = iamClient(ep);
    const user = 'cb-lease-2';
    const policyArn = 'arn:aws:iam::aws:policy/ReadOnlyAccess';
    const inline = JSON.stringify({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: 's3:ListBucket', Resource: '*' }],
    });
    await iam.send(new CreateUserCommand({ UserName: user }));
    await iam.send(new AttachUserPolicyCommand({ UserName: user, PolicyArn: policyArn }));
    await iam.send(new AddUserToGroupCommand({ UserName: user, GroupName: 'readers' }));
    await iam.send(new PutUserPolicyCommand({ UserName: user, PolicyName: 'inline-1', PolicyDocument: inline }));

    expect((await iam.send(new ListAttachedUserPoliciesCommand({ UserName: user }))).AttachedPolicies).toEqual([
      { PolicyName: 'ReadOnlyAccess', PolicyArn: policyArn },
    ]);
    const groups = (await iam.send(new ListGroupsForUserCommand({ UserName: user }))).Groups!;
    expect(groups).toHaveLength(1);
    expect(groups[0]).toMatchObject({
      GroupName: 'readers',
      Path: '/',
      Arn: 'arn:aws:iam::123456789012:group/readers',
    });
    expect((await iam.send(new ListUserPoliciesCommand({ UserName: user }))).PolicyNames).toEqual(['inline-1']);
    expect(
      decodeURIComponent(
        (await iam.send(new GetUserPolicyCommand({ UserName: user, PolicyName: 'inline-1' }))).PolicyDocument!,
      ),
    ).toBe(inline);

    const conflictMessage = async () => (await failure(iam.send(new DeleteUserCommand({ UserName: user })))).message;
    expect(await conflictMessage()).toMatch(/must delete policies first/);
    await iam.send(new DeleteUserPolicyCommand({ UserName: user, PolicyName: 'inline-1' }));
    expect(await conflictMessage()).toMatch(/must detach all policies first/);
    await iam.send(new DetachUserPolicyCommand({ UserName: user, PolicyArn: policyArn }));
    expect(await conflictMessage()).toMatch(/must remove user from all groups first/);
    await iam.send(new RemoveUserFromGroupCommand({ UserName: user, GroupName: 'readers' }));
    await iam.send(new DeleteUserCommand({ UserName: user }));
    expect(ep.state.users.has(user)).toBe(false);
  });

  it('PutRolePolicy refuses documents over 10,240 non-whitespace characters, malformed ones and unknown roles', async () => {
    const iam = new IAMClient({
      endpoint: ep.url,
      region: 'us-east-1',
      credentials: ep.baseCredentials,
      maxAttempts: 2,
    });
    const statement = (i: number) => ({
      Sid: `S${i}`,
      Effect: 'Deny',
      Action: '*',
      Resource: '*',
      Condition: { StringEquals: { 'aws:PrincipalTag/credbroker-lease': `lease-${i}` } },
    });
    const docOf = (n: number) =>
      JSON.stringify({ Version: '2012-10-17', Statement: Array.from({ length: n }, (_, i) => statement(i)) });
    const over = docOf(120);
    expect(over.replace(/\s/g, '').length).toBeGreaterThan(10_240);
    const before = ep.calls.length;
    const err = await failure(
      iam.send(new PutRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'big', PolicyDocument: over })),
    );
    expect(err.name).toBe('LimitExceededException');
    expect(err.$metadata.httpStatusCode).toBe(409);
    expect(err.message).toBe('Maximum policy size of 10240 bytes exceeded for role credbroker-test');
    // The SDK counts LimitExceededException as a throttling error and retries it (as it would against AWS).
    expect(err.$metadata.attempts).toBe(2);
    expect(ep.calls.slice(before).map((c) => c.status)).toEqual([409, 409]);
    expect(ep.state.roles.get('credbroker-test')!.inlinePolicies.size).toBe(0);

    // Whitespace does not count, and the limit is on all of the role's inline policies together.
    const under = docOf(70);
    expect(under.length).toBeLessThan(10_240);
    await iam.send(
      new PutRolePolicyCommand({
        RoleName: 'credbroker-test',
        PolicyName: 'p1',
        PolicyDocument: JSON.stringify(JSON.parse(under), null, 8),
      }),
    );
    const once = new IAMClient({
      endpoint: ep.url,
      region: 'us-east-1',
      credentials: ep.baseCredentials,
      maxAttempts: 1,
    });
    const aggregate = await failure(
      once.send(new PutRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'p2', PolicyDocument: under })),
    );
    expect(aggregate.name).toBe('LimitExceededException');
    await iam.send(new PutRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'p1', PolicyDocument: under })); // replacing is fine
    await iam.send(new DeleteRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'p1' }));

    const malformed = await failure(
      iam.send(
        new PutRolePolicyCommand({ RoleName: 'credbroker-test', PolicyName: 'bad', PolicyDocument: '{"Statement":' }),
      ),
    );
    expect(malformed.name).toBe('MalformedPolicyDocumentException');
    const noEffect = await failure(
      iam.send(
        new PutRolePolicyCommand({
          RoleName: 'credbroker-test',
          PolicyName: 'bad',
          PolicyDocument: '{"Statement":[{"Action":"*"}]}',
        }),
      ),
    );
    expect(noEffect.name).toBe('MalformedPolicyDocumentException');
    const noRole = await failure(
      iam.send(new PutRolePolicyCommand({ RoleName: 'nope', PolicyName: 'p', PolicyDocument: under })),
    );
    expect(noRole.name).toBe('NoSuchEntityException');
    expect(noRole.message).toBe('The role with name nope cannot be found.');
  });
});

describe('aws-endpoint: throttling', () => {
  it('throttleNext(2): the SDK retries on its own and the third attempt succeeds', async () => {
    const ep = await startAwsEndpoint();
    try {
      ep.throttleNext(2);
      const out = await whoAmI(ep);
      expect(out.Arn).toMatch(/user\/credbroker$/);
      expect(out.$metadata.attempts).toBe(3);
      expect(ep.calls.map((c) => [c.action, c.status, c.code])).toEqual([
        ['GetCallerIdentity', 400, 'Throttling'],
        ['GetCallerIdentity', 400, 'Throttling'],
        ['GetCallerIdentity', 200, undefined],
      ]);
    } finally {
      await ep.close();
    }
  });
});
