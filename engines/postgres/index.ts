import { pgTlsOptions, unverifiedTlsWarning } from '../../src/engine-kit.js';
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
    // Files are read now: a missing CA file fails the start, naming its key.
    const tls = pgTlsOptions(mount.connection_url, mount.ssl, `mounts.${ctx.mount}`, 'connection_url');
    const unverified = unverifiedTlsWarning(`mount "${ctx.mount}"`, tls);
    if (unverified) ctx.log.warn({ mount: ctx.mount }, unverified);
    const target = new PostgresTarget(mount, ctx, tls);
    await target.ping().catch((err: Error) => {
      ctx.log.warn(
        { mount: ctx.mount, err: err.message },
        `mount "${ctx.mount}": target not reachable at start; will retry on use: ${err.message}`,
      );
    });
    return target;
  },
};
