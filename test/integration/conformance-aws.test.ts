import { describeEngineConformance } from '../conformance/engine-conformance.js';
import { startAwsEndpoint } from '../support/aws-endpoint/index.js';
import { ROLE_ARN, callerArn, startAwsBroker } from '../support/aws-broker.js';
import { freshStoreDatabase } from '../support/pg.js';

const roles = {
  deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m', max_ttl: '1h' },
  fed: { credential_type: 'federation_token', policy_document: '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}', default_ttl: '15m' },
  session: { credential_type: 'session_token', default_ttl: '15m' },
  ci: { credential_type: 'iam_user', policy_arns: ['arn:aws:iam::aws:policy/ReadOnlyAccess'], iam_groups: ['ci'], default_ttl: '15m' },
};

const cases = [
  { role: 'deploy', renewable: false, revocableBeforeExpiry: true },
  { role: 'fed', renewable: false, revocableBeforeExpiry: false },
  { role: 'session', renewable: false, revocableBeforeExpiry: false },
  { role: 'ci', renewable: true, revocableBeforeExpiry: true },
];

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
      use: async (data) => void (await callerArn(endpoint, data)),
      async close() {
        await broker.close();
        await endpoint.close();
      },
    };
  });
}
