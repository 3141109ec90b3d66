import type { EngineDiscovery } from '../../src/engines.js';
import type { PostgresMount, PostgresRole } from './schema.js';

/**
 * A postgres mount is Vault's database engine with one connection (named after the mount) and
 * the PostgreSQL plugin. The connection URL is never shown: it carries the admin password.
 */
export const postgresDiscovery: EngineDiscovery<PostgresMount, PostgresRole> = {
  vaultType: 'database',
  mountOptions: () => ({ plugin_name: 'postgresql-database-plugin', credbroker_engine: 'postgres' }),
  describeRole: (role, ttls, mountName) => ({
    db_name: mountName,
    default_ttl: ttls.defaultTtl,
    max_ttl: ttls.maxTtl,
    // The group form has no statements: the broker creates the user IN ROLE each group itself.
    creation_statements: role.creation_statements ?? [],
    revocation_statements: role.revocation_statements ?? [],
    renew_statements: role.renew_statements ?? [],
    rollback_statements: [],
    credential_type: 'password',
    credential_config: {},
    ...(role.member_of ? { member_of: role.member_of } : {}),
    ...(role.connection_limit !== undefined ? { connection_limit: role.connection_limit } : {}),
    ...(role.search_path ? { search_path: role.search_path } : {}),
  }),
};
