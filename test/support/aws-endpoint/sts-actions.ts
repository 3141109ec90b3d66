// test-only: never shipped
/**
 * STS (2011-06-15): AssumeRole, GetFederationToken, GetSessionToken, GetCallerIdentity.
 * Trust policies are not modeled: any authenticated caller may assume any configured role.
 */
import { accessDenied, AwsError } from './errors.js';
import { type Principal, principalArn, principalUser, principalUserId } from './auth.js';
import { memberStructs, NAME_PATTERN, type Params, readTags, type Tag, Validator } from './params.js';
import { packedLength, parseSessionPolicy } from './policy.js';
import type { AwsState, Session } from './state.js';
import type { XmlValue } from './xml.js';

export type Handler = (caller: Principal, params: Params, state: AwsState) => XmlValue;

/** Packed size budget of session policy + policy ARNs + session tags (a stand-in for AWS's compressed form). */
const PACKED_BUDGET = 2048;

interface SessionPolicyInput {
  policy?: string;
  policyArns: string[];
  tags: Tag[];
}

function readSessionPolicy(params: Params, v: Validator): SessionPolicyInput {
  const policy = params.Policy;
  const policyArns = memberStructs(params, 'PolicyArns').map((m) => m.arn ?? '');
  v.listSize(policyArns, 'policyArns', 10);
  policyArns.forEach((arn, i) => v.check(arn, `policyArns.${i + 1}.member.arn`, { min: 20, max: 2048 }));
  const tags = readTags(params, v);
  if (policy !== undefined) v.check(policy, 'policy', { min: 1 });
  v.done();
  return { policy, policyArns, tags };
}

/**
 * Order of checks: malformed JSON -> 400 MalformedPolicyDocument; packed size (policy without whitespace +
 * ARNs + tags) over budget -> 400 PackedPolicyTooLarge; plaintext Policy over 2048 characters -> 400
 * ValidationError (AWS's API constraint on the raw parameter). Returns PackedPolicySize as a percentage.
 */
function checkSessionPolicy(input: SessionPolicyInput): number | undefined {
  if (input.policy !== undefined) parseSessionPolicy(input.policy);
  if (input.policy === undefined && input.policyArns.length === 0 && input.tags.length === 0) return undefined;
  const packed =
    (input.policy === undefined ? 0 : packedLength(input.policy)) +
    input.policyArns.reduce((n, a) => n + a.length, 0) +
    input.tags.reduce((n, t) => n + t.Key.length + t.Value.length, 0);
  const percent = Math.ceil((100 * packed) / PACKED_BUDGET);
  if (packed > PACKED_BUDGET) {
    throw new AwsError(
      400,
      'PackedPolicyTooLarge',
      `Packed policy consumes ${percent}% of allotted space, please use smaller policy.`,
    );
  }
  if (input.policy !== undefined && input.policy.length > 2048) {
    throw new AwsError(
      400,
      'ValidationError',
      `1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 2048`,
    );
  }
  return percent;
}

const credentials = (s: Session): XmlValue => ({
  AccessKeyId: s.accessKeyId,
  SecretAccessKey: s.secretAccessKey,
  SessionToken: s.sessionToken,
  Expiration: s.expiration,
});

const assumeRole: Handler = (caller, params, state) => {
  const v = new Validator();
  const roleArn = v.string(params, 'RoleArn', { required: true, min: 20, max: 2048 });
  const sessionName = v.string(params, 'RoleSessionName', { required: true, min: 2, max: 64, pattern: NAME_PATTERN });
  const duration = v.integer(params, 'DurationSeconds', 900, 43200) ?? 3600;
  const externalId = v.string(params, 'ExternalId', { min: 2, max: 1224, pattern: /^[\w+=,.@:/-]*$/ });
  const sourceIdentity = v.string(params, 'SourceIdentity', { min: 2, max: 64, pattern: NAME_PATTERN });
  const input = readSessionPolicy(params, v);

  const role = state.roleByArn(roleArn!);
  if (!role || (caller.kind === 'session' && caller.session.kind === 'federated-user')) {
    throw accessDenied(
      `User: ${principalArn(caller)} is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`,
    );
  }
  const chained = caller.kind === 'session' && caller.session.kind === 'assumed-role';
  if (chained && duration > 3600) {
    throw new AwsError(
      400,
      'ValidationError',
      'The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.',
    );
  }
  if (duration > role.maxSessionDuration) {
    throw new AwsError(
      400,
      'ValidationError',
      'The requested DurationSeconds exceeds the MaxSessionDuration set for this role.',
    );
  }
  const packedPolicySize = checkSessionPolicy(input);

  const session = state.issueSession(
    {
      kind: 'assumed-role',
      arn: `arn:aws:sts::${role.accountId}:assumed-role/${role.roleName}/${sessionName}`,
      userId: `${role.roleId}:${sessionName}`,
      userName: principalUser(caller, state)?.userName,
      roleArn: role.arn,
      roleName: role.roleName,
      sessionName,
      tags: input.tags,
      sourceIdentity,
      externalId,
      policy: input.policy,
      policyArns: input.policyArns,
      chained,
    },
    duration,
  );
  return {
    Credentials: credentials(session),
    AssumedRoleUser: { AssumedRoleId: session.userId, Arn: session.arn },
    PackedPolicySize: packedPolicySize,
    SourceIdentity: sourceIdentity,
  };
};

/** GetFederationToken and GetSessionToken need an IAM user's long-term keys. */
function requireUserKeys(caller: Principal, action: string) {
  if (caller.kind !== 'user') throw accessDenied(`Cannot call ${action} with session credentials`);
  return caller.user;
}

const getFederationToken: Handler = (caller, params, state) => {
  const v = new Validator();
  const name = v.string(params, 'Name', { required: true, min: 2, max: 32, pattern: NAME_PATTERN });
  const duration = v.integer(params, 'DurationSeconds', 900, 129600) ?? 43200;
  const input = readSessionPolicy(params, v);
  const user = requireUserKeys(caller, 'GetFederationToken');
  const packedPolicySize = checkSessionPolicy(input);
  const session = state.issueSession(
    {
      kind: 'federated-user',
      arn: `arn:aws:sts::${state.accountId}:federated-user/${name}`,
      userId: `${state.accountId}:${name}`,
      userName: user.userName,
      sessionName: name,
      tags: input.tags,
      policy: input.policy,
      policyArns: input.policyArns,
      chained: false,
    },
    duration,
  );
  return {
    Credentials: credentials(session),
    FederatedUser: { FederatedUserId: session.userId, Arn: session.arn },
    PackedPolicySize: packedPolicySize,
  };
};

const getSessionToken: Handler = (caller, params, state) => {
  const v = new Validator();
  const duration = v.integer(params, 'DurationSeconds', 900, 129600) ?? 43200;
  v.string(params, 'SerialNumber', { min: 9, max: 256 });
  v.string(params, 'TokenCode', { min: 6, max: 6, pattern: /^\d+$/ });
  v.done();
  const user = requireUserKeys(caller, 'GetSessionToken');
  const session = state.issueSession(
    {
      kind: 'session-token',
      arn: user.arn,
      userId: user.userId,
      userName: user.userName,
      tags: [],
      policyArns: [],
      chained: false,
    },
    duration,
  );
  return { Credentials: credentials(session) };
};

const getCallerIdentity: Handler = (caller, _params, state) => ({
  UserId: principalUserId(caller),
  Account:
    caller.kind === 'session' && caller.session.roleArn
      ? (state.roleByArn(caller.session.roleArn)?.accountId ?? state.accountId)
      : state.accountId,
  Arn: principalArn(caller),
});

export const STS_ACTIONS: Record<string, Handler> = {
  AssumeRole: assumeRole,
  GetFederationToken: getFederationToken,
  GetSessionToken: getSessionToken,
  GetCallerIdentity: getCallerIdentity,
};
