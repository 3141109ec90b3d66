// test-only: never shipped
/**
 * IAM (2010-05-08): users, access keys, managed-policy attachments, group membership, and inline
 * policies of users and roles. Managed policies are not modeled: any well-formed policy ARN attaches.
 * Groups exist implicitly. Quotas as AWS's defaults: 2 access keys, 10 managed policies and 10 groups
 * per user; inline policies in aggregate (non-whitespace characters) ≤ 2,048 per user, ≤ 10,240 per role.
 */
import { AwsError, limitExceeded, noSuchEntity } from './errors.js';
import { type Principal, principalUser } from './auth.js';
import { NAME_PATTERN, type Params, readTags, Validator } from './params.js';
import { packedLength, validateIdentityPolicy } from './policy.js';
import type { AwsState, IamUser, Role } from './state.js';
import type { Handler } from './sts-actions.js';
import type { XmlValue } from './xml.js';

const USER_NAME = { min: 1, max: 64, pattern: NAME_PATTERN };
const POLICY_NAME = { min: 1, max: 128, pattern: NAME_PATTERN };
const POLICY_ARN = /^arn:aws:iam::(aws|\d{12}):policy\/(?:[\x21-\x7e]*\/)?([\w+=,.@-]{1,128})$/;
const USER_POLICY_BUDGET = 2048;
const ROLE_POLICY_BUDGET = 10240;

const userXml = (u: IamUser): XmlValue => ({
  Path: u.path,
  UserName: u.userName,
  UserId: u.userId,
  Arn: u.arn,
  CreateDate: u.createDate,
  PermissionsBoundary: u.permissionsBoundary
    ? { PermissionsBoundaryType: 'Policy', PermissionsBoundaryArn: u.permissionsBoundary }
    : undefined,
  Tags: u.tags.length ? u.tags.map((t) => ({ Key: t.Key, Value: t.Value })) : undefined,
});

function findUser(state: AwsState, name: string): IamUser {
  const user = state.users.get(name);
  if (!user) throw noSuchEntity(`The user with name ${name} cannot be found.`);
  return user;
}

function findRole(state: AwsState, name: string): Role {
  const role = state.roles.get(name);
  if (!role) throw noSuchEntity(`The role with name ${name} cannot be found.`);
  return role;
}

/** The UserName parameter, or the IAM user behind the caller's credentials when it is omitted. */
function targetUser(caller: Principal, params: Params, state: AwsState): IamUser {
  const v = new Validator();
  const name = v.string(params, 'UserName', USER_NAME);
  v.done();
  if (name !== undefined) return findUser(state, name);
  const self = principalUser(caller, state);
  if (!self) throw new AwsError(400, 'ValidationError', 'Must specify userName when calling with non-User credentials');
  return self;
}

/** Validates the required string fields in one go, the way AWS reports them. */
function required(
  params: Params,
  fields: Record<string, { min?: number; max?: number; pattern?: RegExp }>,
): Record<string, string> {
  const v = new Validator();
  const out: Record<string, string> = {};
  for (const [field, rules] of Object.entries(fields))
    out[field] = v.string(params, field, { ...rules, required: true }) ?? '';
  v.done();
  return out;
}

/** Size check over all inline policies of the entity, the new document replacing any of the same name. */
function checkAggregate(
  existing: Map<string, string>,
  policyName: string,
  document: string,
  budget: number,
  entity: string,
) {
  let total = packedLength(document);
  for (const [name, doc] of existing) if (name !== policyName) total += packedLength(doc);
  if (total > budget) throw limitExceeded(`Maximum policy size of ${budget} bytes exceeded for ${entity}`);
}

const listResult = (key: string, items: XmlValue[]): XmlValue => ({ [key]: items, IsTruncated: false });

export const IAM_ACTIONS: Record<string, Handler> = {
  CreateUser: (_caller, params, state) => {
    const v = new Validator();
    const userName = v.string(params, 'UserName', { ...USER_NAME, required: true })!;
    const path = v.string(params, 'Path', { min: 1, max: 512, pattern: /^(\/|\/[\x21-\x7e]+\/)$/ });
    const permissionsBoundary = v.string(params, 'PermissionsBoundary', { min: 20, max: 2048 });
    const tags = readTags(params, v);
    v.done();
    if (state.userNameTaken(userName))
      throw new AwsError(409, 'EntityAlreadyExists', `User with name ${userName} already exists.`);
    if (permissionsBoundary !== undefined && !POLICY_ARN.test(permissionsBoundary)) {
      throw new AwsError(400, 'InvalidInput', `ARN ${permissionsBoundary} is not valid.`);
    }
    return { User: userXml(state.createUser(userName, { path, permissionsBoundary, tags })) };
  },

  GetUser: (caller, params, state) => ({ User: userXml(targetUser(caller, params, state)) }),

  // One page, whatever MaxItems says: IsTruncated is always false.
  ListUsers: (_caller, params, state) => {
    const v = new Validator();
    const prefix = v.string(params, 'PathPrefix', { min: 1, max: 512, pattern: /^\/([\x21-\x7e]*\/)?$/ }) ?? '/';
    v.string(params, 'Marker', { min: 1, max: 320 });
    v.done();
    const users = [...state.users.values()].filter((u) => u.path.startsWith(prefix)).map(userXml);
    return listResult('Users', users);
  },

  DeleteUser: (_caller, params, state) => {
    const user = findUser(state, required(params, { UserName: USER_NAME }).UserName!);
    const conflict = (what: string) => new AwsError(409, 'DeleteConflict', `Cannot delete entity, must ${what} first.`);
    if (state.keysOf(user.userName).length) throw conflict('delete access keys');
    if (user.inlinePolicies.size) throw conflict('delete policies');
    if (user.attachedPolicies.length) throw conflict('detach all policies');
    if (user.groups.length) throw conflict('remove user from all groups');
    state.users.delete(user.userName);
    return undefined;
  },

  CreateAccessKey: (caller, params, state) => {
    const user = targetUser(caller, params, state);
    if (state.keysOf(user.userName).length >= 2) throw limitExceeded('Cannot exceed quota for AccessKeysPerUser: 2');
    const k = state.createAccessKey(user.userName);
    return {
      AccessKey: {
        UserName: k.userName,
        AccessKeyId: k.accessKeyId,
        Status: k.status,
        SecretAccessKey: k.secretAccessKey,
        CreateDate: k.createDate,
      },
    };
  },

  ListAccessKeys: (caller, params, state) => {
    const user = targetUser(caller, params, state);
    const keys = state
      .keysOf(user.userName)
      .map((k) => ({ UserName: k.userName, AccessKeyId: k.accessKeyId, Status: k.status, CreateDate: k.createDate }));
    return listResult('AccessKeyMetadata', keys);
  },

  DeleteAccessKey: (caller, params, state) => {
    const { AccessKeyId: id } = required(params, { AccessKeyId: { min: 16, max: 128, pattern: /^[\w]+$/ } });
    const user = targetUser(caller, params, state);
    const key = state.accessKeys.get(id!);
    if (!key || key.userName !== user.userName) throw noSuchEntity(`The Access Key with id ${id} cannot be found.`);
    state.accessKeys.delete(key.accessKeyId);
    return undefined;
  },

  AttachUserPolicy: (_caller, params, state) => {
    const p = required(params, { UserName: USER_NAME, PolicyArn: { min: 20, max: 2048 } });
    if (!POLICY_ARN.test(p.PolicyArn!)) throw new AwsError(400, 'InvalidInput', `ARN ${p.PolicyArn} is not valid.`);
    const user = findUser(state, p.UserName!);
    if (!user.attachedPolicies.includes(p.PolicyArn!)) {
      if (user.attachedPolicies.length >= 10) throw limitExceeded('Cannot exceed quota for PoliciesPerUser: 10');
      user.attachedPolicies.push(p.PolicyArn!);
    }
    return undefined;
  },

  DetachUserPolicy: (_caller, params, state) => {
    const p = required(params, { UserName: USER_NAME, PolicyArn: { min: 20, max: 2048 } });
    const user = findUser(state, p.UserName!);
    if (!user.attachedPolicies.includes(p.PolicyArn!)) throw noSuchEntity(`Policy ${p.PolicyArn} was not found.`);
    user.attachedPolicies = user.attachedPolicies.filter((a) => a !== p.PolicyArn);
    return undefined;
  },

  ListAttachedUserPolicies: (_caller, params, state) => {
    const user = findUser(state, required(params, { UserName: USER_NAME }).UserName!);
    return listResult(
      'AttachedPolicies',
      user.attachedPolicies.map((arn) => ({ PolicyName: POLICY_ARN.exec(arn)![2], PolicyArn: arn })),
    );
  },

  AddUserToGroup: (_caller, params, state) => {
    const p = required(params, { GroupName: { min: 1, max: 128, pattern: NAME_PATTERN }, UserName: USER_NAME });
    const user = findUser(state, p.UserName!);
    const group = state.group(p.GroupName!);
    if (!user.groups.includes(group.groupName)) {
      if (user.groups.length >= 10) throw limitExceeded('Cannot exceed quota for GroupsPerUser: 10');
      user.groups.push(group.groupName);
    }
    return undefined;
  },

  RemoveUserFromGroup: (_caller, params, state) => {
    const p = required(params, { GroupName: { min: 1, max: 128, pattern: NAME_PATTERN }, UserName: USER_NAME });
    const user = findUser(state, p.UserName!);
    if (!user.groups.includes(p.GroupName!))
      throw noSuchEntity(`The user with name ${p.UserName} cannot be found in group ${p.GroupName}.`);
    user.groups = user.groups.filter((g) => g !== p.GroupName);
    return undefined;
  },

  ListGroupsForUser: (_caller, params, state) => {
    const user = findUser(state, required(params, { UserName: USER_NAME }).UserName!);
    const groups = user.groups.map((name) => state.group(name));
    return listResult(
      'Groups',
      groups.map((g) => ({
        Path: g.path,
        GroupName: g.groupName,
        GroupId: g.groupId,
        Arn: g.arn,
        CreateDate: g.createDate,
      })),
    );
  },

  PutUserPolicy: (_caller, params, state) => {
    const p = required(params, {
      UserName: USER_NAME,
      PolicyName: POLICY_NAME,
      PolicyDocument: { min: 1, max: 131072 },
    });
    const user = findUser(state, p.UserName!);
    validateIdentityPolicy(p.PolicyDocument!);
    checkAggregate(user.inlinePolicies, p.PolicyName!, p.PolicyDocument!, USER_POLICY_BUDGET, `user ${user.userName}`);
    user.inlinePolicies.set(p.PolicyName!, p.PolicyDocument!);
    return undefined;
  },

  GetUserPolicy: (_caller, params, state) => {
    const p = required(params, { UserName: USER_NAME, PolicyName: POLICY_NAME });
    const doc = findUser(state, p.UserName!).inlinePolicies.get(p.PolicyName!);
    if (doc === undefined) throw noSuchEntity(`The user policy with name ${p.PolicyName} cannot be found.`);
    // AWS returns policy documents URL-encoded (RFC 3986); clients decodeURIComponent them.
    return { UserName: p.UserName, PolicyName: p.PolicyName, PolicyDocument: encodeURIComponent(doc) };
  },

  DeleteUserPolicy: (_caller, params, state) => {
    const p = required(params, { UserName: USER_NAME, PolicyName: POLICY_NAME });
    if (!findUser(state, p.UserName!).inlinePolicies.delete(p.PolicyName!))
      throw noSuchEntity(`The user policy with name ${p.PolicyName} cannot be found.`);
    return undefined;
  },

  ListUserPolicies: (_caller, params, state) => {
    const user = findUser(state, required(params, { UserName: USER_NAME }).UserName!);
    return listResult('PolicyNames', [...user.inlinePolicies.keys()]);
  },

  PutRolePolicy: (_caller, params, state) => {
    const p = required(params, {
      RoleName: USER_NAME,
      PolicyName: POLICY_NAME,
      PolicyDocument: { min: 1, max: 131072 },
    });
    const role = findRole(state, p.RoleName!);
    validateIdentityPolicy(p.PolicyDocument!);
    checkAggregate(role.inlinePolicies, p.PolicyName!, p.PolicyDocument!, ROLE_POLICY_BUDGET, `role ${role.roleName}`);
    role.inlinePolicies.set(p.PolicyName!, p.PolicyDocument!);
    return undefined;
  },

  GetRolePolicy: (_caller, params, state) => {
    const p = required(params, { RoleName: USER_NAME, PolicyName: POLICY_NAME });
    const doc = findRole(state, p.RoleName!).inlinePolicies.get(p.PolicyName!);
    if (doc === undefined) throw noSuchEntity(`The role policy with name ${p.PolicyName} cannot be found.`);
    return { RoleName: p.RoleName, PolicyName: p.PolicyName, PolicyDocument: encodeURIComponent(doc) };
  },

  DeleteRolePolicy: (_caller, params, state) => {
    const p = required(params, { RoleName: USER_NAME, PolicyName: POLICY_NAME });
    if (!findRole(state, p.RoleName!).inlinePolicies.delete(p.PolicyName!))
      throw noSuchEntity(`The role policy with name ${p.PolicyName} cannot be found.`);
    return undefined;
  },

  ListRolePolicies: (_caller, params, state) => {
    const role = findRole(state, required(params, { RoleName: USER_NAME }).RoleName!);
    return listResult('PolicyNames', [...role.inlinePolicies.keys()]);
  },
};
