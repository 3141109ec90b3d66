/** Renders an issued credential envelope for files and shells. */
export type CredentialFormat = 'json' | 'env' | 'pgpass' | 'aws-credentials' | 'credential-process';
export const CREDENTIAL_FORMATS: CredentialFormat[] = ['json', 'env', 'pgpass', 'aws-credentials', 'credential-process'];

interface Envelope {
  lease_id: string;
  lease_duration: number;
  renewable: boolean;
  data: Record<string, unknown>;
}

const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
const pgpassEscape = (v: unknown) => String(v ?? '*').replace(/[\\:]/g, (c) => `\\${c}`);

/** Names libpq, psql and the AWS CLI/SDKs read from the environment, for keys our engines return. */
const WELL_KNOWN_ENV: Record<string, string> = {
  host: 'PGHOST',
  port: 'PGPORT',
  database: 'PGDATABASE',
  username: 'PGUSER',
  password: 'PGPASSWORD',
  access_key: 'AWS_ACCESS_KEY_ID',
  secret_key: 'AWS_SECRET_ACCESS_KEY',
  session_token: 'AWS_SESSION_TOKEN',
};

function requireAwsKeys(data: Record<string, unknown>): { access_key: string; secret_key: string; session_token?: string } {
  if (typeof data.access_key !== 'string' || typeof data.secret_key !== 'string') throw new Error('this format needs an AWS credential (access_key, secret_key)');
  return { access_key: data.access_key, secret_key: data.secret_key, session_token: typeof data.session_token === 'string' ? data.session_token : undefined };
}

export function formatCredential(envelope: Envelope, format: CredentialFormat, opts: { profile?: string; now?: Date } = {}): string {
  const data = envelope.data ?? {};
  switch (format) {
    case 'json':
      return `${JSON.stringify(envelope, null, 2)}\n`;
    case 'env': {
      const lines = [`CREDBROKER_LEASE_ID=${shellQuote(envelope.lease_id)}`, `CREDBROKER_LEASE_DURATION=${envelope.lease_duration}`];
      for (const [key, value] of Object.entries(data)) {
        if (value === null || value === undefined) continue;
        const name = WELL_KNOWN_ENV[key] ?? key.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
        lines.push(`${name}=${shellQuote(String(value))}`);
      }
      return `${lines.join('\n')}\n`;
    }
    case 'pgpass':
      if (!('username' in data) || !('password' in data)) throw new Error('pgpass format needs a credential with username and password');
      return `${[data.host, data.port, data.database, data.username, data.password].map(pgpassEscape).join(':')}\n`;
    case 'aws-credentials': {
      const keys = requireAwsKeys(data);
      const lines = [`[${opts.profile ?? 'default'}]`, `aws_access_key_id = ${keys.access_key}`, `aws_secret_access_key = ${keys.secret_key}`];
      if (keys.session_token) lines.push(`aws_session_token = ${keys.session_token}`);
      return `${lines.join('\n')}\n`;
    }
    case 'credential-process': {
      // The JSON AWS's `credential_process` expects; the SDK calls the process again before Expiration.
      const keys = requireAwsKeys(data);
      const expiration =
        typeof data.expiration === 'string' ? data.expiration : new Date((opts.now ?? new Date()).getTime() + envelope.lease_duration * 1000).toISOString();
      return `${JSON.stringify({ Version: 1, AccessKeyId: keys.access_key, SecretAccessKey: keys.secret_key, ...(keys.session_token ? { SessionToken: keys.session_token } : {}), Expiration: expiration })}\n`;
    }
  }
}
