import type { Engine } from '../../src/engines.js';
import { awsMountSchema, awsRoleSchema, type AwsMount, type AwsRole } from './schema.js';
import { AwsTarget } from './target.js';

/** AWS: STS sessions (assumed_role, federation_token, session_token) and IAM users, as leases. */
export const awsEngine: Engine<AwsMount, AwsRole> = {
  type: 'aws',
  mountSchema: awsMountSchema,
  roleSchema: awsRoleSchema,
  paths: ['sts'],
  async connect(mount, ctx) {
    return new AwsTarget(mount, ctx);
  },
};
