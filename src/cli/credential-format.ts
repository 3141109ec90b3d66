/** Renders an issued credential envelope for files and shells. */
export type CredentialFormat = 'json' | 'env' | 'pgpass';
export const CREDENTIAL_FORMATS: CredentialFormat[] = ['json', 'env', 'pgpass'];

interface Envelope {
  lease_id: string;
  lease_duration: number;
  renewable: boolean;
  data: Record<string, unknown>;
}

const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
const pgpassEscape = (v: unknown) => String(v ?? '*').replace(/[\\:]/g, (c) => `\\${c}`);

/** Names libpq and psql read from the environment, for keys a PostgreSQL lease returns. */
const PG_ENV: Record<string, string> = { host: 'PGHOST', port: 'PGPORT', database: 'PGDATABASE', username: 'PGUSER', password: 'PGPASSWORD' };

export function formatCredential(envelope: Envelope, format: CredentialFormat): string {
  const data = envelope.data ?? {};
  switch (format) {
    case 'json':
      return `${JSON.stringify(envelope, null, 2)}\n`;
    case 'env': {
      const lines = [`CREDBROKER_LEASE_ID=${shellQuote(envelope.lease_id)}`, `CREDBROKER_LEASE_DURATION=${envelope.lease_duration}`];
      for (const [key, value] of Object.entries(data)) {
        const name = PG_ENV[key] ?? key.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
        lines.push(`${name}=${shellQuote(String(value))}`);
      }
      return `${lines.join('\n')}\n`;
    }
    case 'pgpass':
      if (!('username' in data) || !('password' in data)) throw new Error('pgpass format needs a credential with username and password');
      return `${[data.host, data.port, data.database, data.username, data.password].map(pgpassEscape).join(':')}\n`;
  }
}
