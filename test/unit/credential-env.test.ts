import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { credentialEnv, parseEnvLines } from '../../src/cli/credential-env.js';
import { formatCredential } from '../../src/cli/credential-format.js';

const envelope = (data: Record<string, unknown>) => ({
  lease_id: 'db/creds/r/abc',
  lease_duration: 60,
  renewable: true,
  data,
});

describe('credentialEnv', () => {
  it('reads back any value the env format writes: quotes, newlines, equals signs, unicode', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string(), (password, username) => {
        const env = parseEnvLines(formatCredential(envelope({ username, password }), 'env'));
        return env.PGPASSWORD === password && env.PGUSER === username;
      }),
    );
  });

  it('names PostgreSQL and AWS credentials as libpq and the AWS SDKs read them, with a prefix, without the lease variables', () => {
    const pg = credentialEnv(
      envelope({ username: 'u', password: "p'w@:/", host: 'db.internal', port: 5432, database: 'wh' }),
      'WH_',
    );
    expect(pg).toEqual({
      WH_PGUSER: 'u',
      WH_PGPASSWORD: "p'w@:/",
      WH_PGHOST: 'db.internal',
      WH_PGPORT: '5432',
      WH_PGDATABASE: 'wh',
      WH_DATABASE_URL: "postgres://u:p'w%40%3A%2F@db.internal:5432/wh",
    });
    const aws = credentialEnv(envelope({ access_key: 'AKIA1', secret_key: 's/k', session_token: 'tok' }));
    expect(aws).toMatchObject({ AWS_ACCESS_KEY_ID: 'AKIA1', AWS_SECRET_ACCESS_KEY: 's/k', AWS_SESSION_TOKEN: 'tok' });
    expect(Object.keys(aws)).not.toContain('CREDBROKER_LEASE_ID');
  });
});
