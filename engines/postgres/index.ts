import type { Engine } from '../../src/engines.js';
import { postgresDiscovery } from './discovery.js';
import { postgresFormats } from './formats.js';
import {
  postgresSecrets,
  postgresMountSchema,
  postgresRoleSchema,
  type PostgresMount,
  type PostgresRole,
} from './schema.js';
import { PostgresTarget } from './target.js';

/** PostgreSQL login roles, one per lease. */
export const postgresEngine: Engine<PostgresMount, PostgresRole> = {
  type: 'postgres',
  mountSchema: postgresMountSchema,
  roleSchema: postgresRoleSchema,
  secrets: postgresSecrets,
  discovery: postgresDiscovery,
  formats: postgresFormats,
  async connect(mount, ctx) {
    const target = new PostgresTarget(mount, ctx);
    await target.ping().catch((err: Error) => {
      ctx.log.warn({ mount: ctx.mount, err: err.message }, 'target not reachable at start; will retry on use');
    });
    return target;
  },
};
