import { describeEngineConformance, type TargetProbe } from '../../../../test/conformance/engine-conformance.js';
import { startAwsEndpoint, type AwsEndpoint, type Session } from '../../../../test/support/aws-endpoint/index.js';
import { authorize } from '../../../../test/support/aws-endpoint/auth.js';
import { ROLE_ARN, callerArn, startAwsBroker } from '../../../../test/support/aws-broker.js';
import { freshStoreDatabase } from '../../../../test/support/pg.js';

const roles = {
  deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m', max_ttl: '1h' },
  fed: {
    credential_type: 'federation_token',
    policy_document: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}',
    default_ttl: '15m',
  },
  session: { credential_type: 'session_token', default_ttl: '15m' },
  ci: {
    credential_type: 'iam_user',
    policy_arns: ['arn:aws:iam::aws:policy/ReadOnlyAccess'],
    iam_groups: ['ci'],
    default_ttl: '15m',
  },
};

const cases = [
  { role: 'deploy', renewable: false, revocableBeforeExpiry: true },
  { role: 'fed', renewable: false, revocableBeforeExpiry: false },
  { role: 'session', renewable: false, revocableBeforeExpiry: false },
  { role: 'ci', renewable: true, revocableBeforeExpiry: true },
];

type Handle =
  | { kind: 'assumed_role'; session_name: string }
  | { kind: 'federation_token'; name: string }
  | { kind: 'session_token' }
  | { kind: 'iam_user'; user_name: string };

/** What the local endpoint records: its IAM users, the STS sessions it issued, the roles' deny policies. */
function endpointProbe(endpoint: AwsEndpoint): TargetProbe {
  const { state } = endpoint;
  const sessionOf = (handle: Handle, credential?: Record<string, unknown>): Session | undefined => {
    const sessions = [...state.sessions.values()];
    switch (handle.kind) {
      case 'assumed_role':
        return sessions.find((s) => s.kind === 'assumed-role' && s.sessionName === handle.session_name);
      case 'federation_token':
        return sessions.find((s) => s.kind === 'federated-user' && s.sessionName === handle.name);
      case 'session_token':
        return credential ? state.sessions.get(String(credential.access_key)) : undefined; // nothing else names it
      case 'iam_user':
        return undefined;
    }
  };
  const denied = (session: Session) => {
    try {
      authorize({ kind: 'session', session }, 'sts', 'GetCallerIdentity', state);
      return false;
    } catch {
      return true;
    }
  };
  return {
    async exists(raw, credential) {
      const handle = raw as Handle;
      if (handle.kind === 'iam_user')
        return state.users.has(handle.user_name) && state.keysOf(handle.user_name).length > 0;
      const session = sessionOf(handle, credential);
      return session !== undefined && !denied(session);
    },
    async validUntil(raw, credential) {
      const handle = raw as Handle;
      if (handle.kind === 'iam_user') return undefined; // an IAM user has no expiry of its own
      return sessionOf(handle, credential)?.expiration ?? null;
    },
  };
}

for (const c of cases) {
  describeEngineConformance(`aws ${roles[c.role as keyof typeof roles].credential_type}`, async () => {
    const endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
    const broker = await startAwsBroker(endpoint, await freshStoreDatabase('aws'), roles);
    return {
      broker,
      mount: 'aws',
      role: c.role,
      renewable: c.renewable,
      revocableBeforeExpiry: c.revocableBeforeExpiry,
      probe: endpointProbe(endpoint),
      use: async (data) => void (await callerArn(endpoint, data)),
      async close() {
        await broker.close();
        await endpoint.close();
      },
    };
  });
}
