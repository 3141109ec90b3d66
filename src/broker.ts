import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import cron from 'node-cron';
import type pg from 'pg';
import type { Logger } from 'pino';
import { createApp } from './api/app.js';
import { createAuditor, type Auditor } from './audit/auditor.js';
import { AuthService } from './auth/auth-service.js';
import { PolicySet } from './auth/policy.js';
import { expireTokensOnce } from './auth/token-expiry.js';
import { TokenStore } from './auth/token-store.js';
import { acceptListMethod } from './api/list-method.js';
import type { BrokerConfig } from './config/schema.js';
import { LeaseService } from './leases/lease-service.js';
import { LeaseStore } from './leases/lease-store.js';
import { Reaper } from './leases/reaper.js';
import { Revoker } from './leases/revoker.js';
import { MountRegistry } from './mounts.js';
import { migrate } from './store/migrate.js';
import { createStorePool } from './store/pool.js';
import { VERSION } from './version.js';

export interface Broker {
  url: string;
  port: number;
  leases: LeaseService;
  reaper: Reaper;
  store: LeaseStore;
  auditor: Auditor;
  auth: AuthService;
  mounts: MountRegistry;
  close(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  /** Run the reaper on its schedule (tests drive reapOnce() directly instead). */
  reaper?: boolean;
}

/**
 * Starts one stateless broker process: migrate the store, connect mounts, serve HTTP, reap on a
 * schedule. Nothing here reads the lease table at start, so start-up does not grow with it.
 */
export async function startBroker(config: BrokerConfig, opts: StartOptions): Promise<Broker> {
  const { log } = opts;
  const pool: pg.Pool = createStorePool(config.store.url, config.store.max_connections, log);
  let mounts: MountRegistry | undefined;
  try {
    const applied = await migrate(pool);
    if (applied.length) log.info({ applied }, 'migrations applied');
    mounts = await MountRegistry.connect(config, log);
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw err;
  }

  const store = new LeaseStore(pool);
  const auditor = createAuditor(config.audit, { storePool: pool, log });
  const revoker = new Revoker(store, mounts, config.reaper, log, (event) => auditor.event({ request_id: `reaper:${event.lease_id}`, ...event }));
  const leases = new LeaseService(store, mounts, revoker, config.reaper, log);
  const reaper = new Reaper(store, revoker, config.reaper, log);

  const tokens = new TokenStore(pool);
  const auth = new AuthService(config.root_token, config.auth, tokens, log);
  const app = createApp({
    leases,
    auth,
    policies: new PolicySet(config.policies),
    auditor,
    log,
    health: {
      version: VERSION,
      clusterName: 'credbroker',
      storeReachable: () =>
        pool.query('SELECT 1').then(
          () => true,
          () => false,
        ),
    },
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.listen.port, config.listen.address, () => resolve(s));
    s.once('error', reject);
  });
  server.keepAliveTimeout = 65_000;
  acceptListMethod(server);
  const { port } = server.address() as AddressInfo;

  const task = opts.reaper === false ? null : cron.schedule(config.reaper.schedule, () => reaper.tick(), { name: 'reaper', noOverlap: true });
  const tokenTask =
    opts.reaper === false
      ? null
      : cron.schedule('*/5 * * * * *', () => expireTokensOnce(tokens, leases, log).catch((err) => log.warn({ err: (err as Error).message }, 'token expiry sweep failed')), {
          name: 'token-expiry',
          noOverlap: true,
        });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await task?.destroy();
      await tokenTask?.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await reaper.stop();
      await mounts!.close();
      await auditor.close();
      await pool.end();
    })());

  const host = config.listen.address.includes(':') ? `[${config.listen.address}]` : config.listen.address;
  log.info({ url: `http://${host}:${port}`, mounts: mounts.names() }, 'credbroker listening');
  return { url: `http://${host}:${port}`, port, leases, reaper, store, mounts, auditor, auth, close };
}
