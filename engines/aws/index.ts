import type { Engine } from '../../src/engines.js';
import { awsDiscovery } from './discovery.js';
import { awsFormats } from './formats.js';
import { awsSecrets, awsMountSchema, awsRoleSchema, type AwsMount, type AwsRole } from './schema.js';

/** AWS: STS sessions (assumed_role, federation_token, session_token) and IAM users, as leases. */
export const awsEngine: Engine<AwsMount, AwsRole> = {
  type: 'aws',
  mountSchema: awsMountSchema,
  roleSchema: awsRoleSchema,
  secrets: awsSecrets,
  paths: ['sts'],
  discovery: awsDiscovery,
  formats: awsFormats,
  async connect(mount, ctx) {
    // The AWS SDK is loaded only by a broker that has an AWS mount: start-up and memory stay lean.
    const { AwsTarget } = await import('./target.js');
    return new AwsTarget(mount, ctx);
  },
};
