import { z } from 'zod';
import { pgSslSchema } from '../../src/engine-kit.js';
import type { EngineSecrets } from '../../src/engines.js';

/** libpq's sslmode values, for what a workload is told to use. */
export const CLIENT_SSLMODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

export const postgresMountSchema = z
  .object({
    /** postgres://user:${env:PW}@host:5432/db — the broker's own admin login on the target. */
    connection_url: z.string().url('must be a postgres:// URL'),
    /** Hard bound on connections to the target: a burst of requests queues at the broker. */
    max_open_connections: z.number().int().min(1).max(200).default(4),
    username_prefix: z
      .string()
      .regex(/^[a-z][a-z0-9]{0,15}$/, 'must be 1-16 lower-case letters or digits, starting with a letter')
      .default('cb'),
    /** PBKDF2 iterations of the SCRAM verifier; passwords are 256-bit random, so low is safe. */
    scram_iterations: z.number().int().min(1).max(1_000_000).default(16),
    /** What happens to objects a lease's user owns when it is revoked. */
    revoke_owned: z.enum(['drop', 'reassign']).default('drop'),
    reassign_owned_to: z.string().min(1).optional(),
    /** What clients should connect to, when it differs from connection_url (a Service name, a proxy). */
    connection_host: z.string().min(1).optional(),
    connection_port: z.number().int().min(1).max(65535).optional(),
    connection_database: z.string().min(1).optional(),
    /** TLS from the broker to the target; wins over sslmode & co. in connection_url when both are given. */
    ssl: pgSslSchema.optional(),
    /** Told to workloads with each credential (data.sslmode, PGSSLMODE, DATABASE_URL's ?sslmode=). */
    client_sslmode: z.enum(CLIENT_SSLMODES).optional(),
    /** The CA file's path inside the workload (data.sslrootcert, PGSSLROOTCERT). */
    client_sslrootcert: z.string().min(1).optional(),
  })
  .strict()
  .refine((m) => m.revoke_owned !== 'reassign' || m.reassign_owned_to, {
    message: 'reassign_owned_to is required when revoke_owned is "reassign"',
    path: ['reassign_owned_to'],
  });

const statements = z.array(z.string().min(1)).min(1);

export const postgresRoleSchema = z
  .object({
    /** Group roles the user joins (CREATE ROLE … IN ROLE): the fast path, no per-lease ACL change. */
    member_of: z.array(z.string().min(1).max(63)).min(1).optional(),
    connection_limit: z.number().int().min(-1).optional(),
    search_path: z.array(z.string().min(1).max(63)).min(1).optional(),
    /** Vault's form: {{name}}, {{password}}, {{expiration}} placeholders. */
    creation_statements: statements.optional(),
    revocation_statements: statements.optional(),
    renew_statements: statements.optional(),
  })
  .strict()
  .refine((r) => Boolean(r.member_of) !== Boolean(r.creation_statements), {
    message: 'give exactly one of member_of or creation_statements',
  });

export type PostgresMount = z.infer<typeof postgresMountSchema>;
export type PostgresRole = z.infer<typeof postgresRoleSchema>;

/** The admin login's password lives in connection_url; a lease's password in the credential. */
export const postgresSecrets: EngineSecrets = {
  mount: { connection_url: 'url-password' },
  credential: ['password'],
  plain: ['username'],
};
