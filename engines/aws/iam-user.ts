import {
  AddUserToGroupCommand,
  AttachUserPolicyCommand,
  CreateAccessKeyCommand,
  CreateUserCommand,
  DeleteAccessKeyCommand,
  DeleteUserCommand,
  DeleteUserPolicyCommand,
  DetachUserPolicyCommand,
  ListAccessKeysCommand,
  ListAttachedUserPoliciesCommand,
  ListGroupsForUserCommand,
  ListUserPoliciesCommand,
  PutUserPolicyCommand,
  RemoveUserFromGroupCommand,
  type IAMClient,
} from '@aws-sdk/client-iam';
import type { SecretSink } from '../../src/engines.js';
import { isNoSuchEntity } from './clients.js';
import { LEASE_TAG } from './deny-policy.js';
import type { AwsRole } from './schema.js';

type IamUserRole = Extract<AwsRole, { credential_type: 'iam_user' }>;
const INLINE_POLICY_NAME = 'credbroker';

/** An IAM user with an access key, shaped by the role: boundary, managed policies, groups, inline policy. */
export async function createIamUser(
  iam: IAMClient,
  role: IamUserRole,
  userName: string,
  leaseId: string,
  secrets: SecretSink,
) {
  const { User } = await iam.send(
    new CreateUserCommand({
      UserName: userName,
      Path: role.user_path,
      PermissionsBoundary: role.permissions_boundary_arn,
      Tags: [{ Key: LEASE_TAG, Value: leaseId }],
    }),
  );
  for (const PolicyArn of role.policy_arns ?? [])
    await iam.send(new AttachUserPolicyCommand({ UserName: userName, PolicyArn }));
  for (const GroupName of role.iam_groups ?? [])
    await iam.send(new AddUserToGroupCommand({ UserName: userName, GroupName }));
  if (role.policy_document) {
    await iam.send(
      new PutUserPolicyCommand({
        UserName: userName,
        PolicyName: INLINE_POLICY_NAME,
        PolicyDocument: role.policy_document,
      }),
    );
  }
  const { AccessKey } = await iam.send(new CreateAccessKeyCommand({ UserName: userName }));
  secrets.add(AccessKey!.SecretAccessKey!);
  return {
    access_key: AccessKey!.AccessKeyId!,
    secret_key: AccessKey!.SecretAccessKey!,
    session_token: null,
    arn: User?.Arn ?? null,
  };
}

/** Undoes everything createIamUser may have done, in the order IAM requires; a user already gone is fine. */
export async function deleteIamUser(iam: IAMClient, userName: string): Promise<void> {
  try {
    const keys = await iam.send(new ListAccessKeysCommand({ UserName: userName }));
    for (const key of keys.AccessKeyMetadata ?? [])
      await iam.send(new DeleteAccessKeyCommand({ UserName: userName, AccessKeyId: key.AccessKeyId }));
    const attached = await iam.send(new ListAttachedUserPoliciesCommand({ UserName: userName }));
    for (const p of attached.AttachedPolicies ?? [])
      await iam.send(new DetachUserPolicyCommand({ UserName: userName, PolicyArn: p.PolicyArn }));
    const groups = await iam.send(new ListGroupsForUserCommand({ UserName: userName }));
    for (const g of groups.Groups ?? [])
      await iam.send(new RemoveUserFromGroupCommand({ UserName: userName, GroupName: g.GroupName }));
    const inline = await iam.send(new ListUserPoliciesCommand({ UserName: userName }));
    for (const PolicyName of inline.PolicyNames ?? [])
      await iam.send(new DeleteUserPolicyCommand({ UserName: userName, PolicyName }));
    await iam.send(new DeleteUserCommand({ UserName: userName }));
  } catch (err) {
    if (!isNoSuchEntity(err)) throw err;
  }
}
