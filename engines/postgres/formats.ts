import type { CredentialFormats } from '../../src/engines.js';

const pgpassEscape = (v: unknown) => String(v ?? '*').replace(/[\\:]/g, (c) => `\\${c}`);

/** As libpq, psql and every PostgreSQL driver read a login. */
export const postgresFormats: CredentialFormats = {
  env: { username: 'PGUSER', password: 'PGPASSWORD', host: 'PGHOST', port: 'PGPORT', database: 'PGDATABASE' },
  files: {
    /** One hostname:port:database:username:password line, `*` for what the credential lacks. */
    pgpass({ data }) {
      if (!('username' in data) || !('password' in data))
        throw new Error('pgpass format needs a credential with username and password');
      return `${[data.host, data.port, data.database, data.username, data.password].map(pgpassEscape).join(':')}\n`;
    },
  },
};
