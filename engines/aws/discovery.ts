import type { EngineDiscovery, JsonValue } from '../../src/engines.js';
import type { AwsMount, AwsRole } from './schema.js';

/** An aws mount is Vault's aws engine; its roles read as Vault's `aws/roles/<name>` does. */
export const awsDiscovery: EngineDiscovery<AwsMount, AwsRole> = {
  vaultType: 'aws',
  mountOptions: () => ({ credbroker_engine: 'aws' }),
  describeRole: (role, ttls) => {
    const sts = role.credential_type !== 'iam_user';
    const shown: Record<string, JsonValue> = {
      credential_type: role.credential_type,
      role_arns: role.credential_type === 'assumed_role' ? role.role_arns : [],
      policy_arns: 'policy_arns' in role ? (role.policy_arns ?? []) : [],
      policy_document: 'policy_document' in role ? (role.policy_document ?? '') : '',
      iam_groups: role.credential_type === 'iam_user' ? (role.iam_groups ?? []) : [],
      default_sts_ttl: sts ? ttls.defaultTtl : 0,
      max_sts_ttl: sts ? ttls.maxTtl : 0,
      user_path: role.credential_type === 'iam_user' ? role.user_path : '',
      permissions_boundary_arn: role.credential_type === 'iam_user' ? (role.permissions_boundary_arn ?? '') : '',
      session_tags: role.credential_type === 'assumed_role' ? (role.session_tags ?? {}) : {},
      external_id: role.credential_type === 'assumed_role' ? (role.external_id ?? '') : '',
    };
    if (role.credential_type === 'assumed_role') shown.max_session_duration = role.max_session_duration;
    return shown;
  },
};
