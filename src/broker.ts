import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import cron from 'node-cron';
import type pg from 'pg';
import type { Logger } from 'pino';
import { engines as allEngines } from '../engines/index.js';
import { startAlerts, type BrokerAlerts } from './alerts/broker-alerts.js';
import { createApp } from './api/app.js';
import { createAuditor, type Auditor } from './audit/auditor.js';
import { auditFieldsFor } from './audit/record.js';
import { AuthService } from './auth/auth-service.js';
import { PolicySet } from './auth/policy.js';
import { expireTokensOnce } from './auth/token-expiry.js';
import { TokenStore } from './auth/token-store.js';
import { acceptListMethod } from './api/list-method.js';
import type { BrokerConfig } from './config/schema.js';
import type { EngineRegistry } from './engines.js';
import { LeaseService } from './leases/lease-service.js';
import { LeaseStore } from './leases/lease-store.js';
import { Reaper } from './leases/reaper.js';
import { RevokeJobRunner } from './jobs/revoke-job-runner.js';
import { RevokeJobs } from './jobs/revoke-jobs.js';
import { reaperPauseControl } from './leases/reaper-pause.js';
import { Revoker } from './leases/revoker.js';
import { ListenFailed } from './errors.js';
import { redactingFor } from './log.js';
import { BrokerMetrics } from './metrics/broker-metrics.js';
import { MountRegistry } from './mounts.js';
import { migrate } from './store/migrate.js';
import { explainStoreError, pgTlsOptions, unverifiedTlsWarning } from './store/pg-ssl.js';
import { createStorePool } from './store/pool.js';
import { ProcessLock } from './store/process-lock.js';
import { scheduleTidy } from './store/tidy.js';
import { scheduleSweep } from './sweep/schedule-sweep.js';
import { Sweeper } from './sweep/sweeper.js';
import { isLoopback, loadListenerCredentials, serverTlsOptions, type ListenTlsConfig } from './tls/listener-tls.js';
import { VERSION } from './version.js';
import { WrappingService } from './wrapping/wrapping-service.js';

export interface Broker {
  url: string;
  port: number;
  leases: LeaseService;
  reaper: Reaper;
  /** Incident revocation jobs: start one, report on it (sys/broker/revoke, sys/broker/jobs). */
  jobs: RevokeJobs;
  /** Runs those jobs in this process; its timer takes up jobs nobody runs (tests may call tick()). */
  jobRunner: RevokeJobRunner;
  store: LeaseStore;
  auditor: Auditor;
  auth: AuthService;
  /** The orphan sweep; tests call sweepOnce() directly. */
  sweeper: Sweeper;
  mounts: MountRegistry;
  metrics: BrokerMetrics;
  alerts: BrokerAlerts;
  /**
   * Re-reads the listener's certificate and key (SIGHUP): new handshakes present them, open
   * connections keep theirs. A file that is missing or does not match is logged and changes nothing.
   */
  reloadTls(): void;
  close(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  /** Run the reaper on its schedule (tests drive reapOnce() directly instead). */
  reaper?: boolean;
  /**
   * The engines mounts may use, by type: every engine in engines/index.ts by default. The config
   * must have been validated for the same engines (configSchemaFor, parseConfig). Their declared
   * secret fields are what the audit log HMACs and the logs redact.
   */
  engines?: EngineRegistry;
}

/** Opens the HTTP(S) listener; a port in use (or any other refusal) is a ListenFailed, not a crash later. */
function listen(
  app: RequestListener,
  address: string,
  port: number,
  tls: ListenTlsConfig | undefined,
): Promise<Server> {
  const server: Server = tls ? createHttpsServer(serverTlsOptions(tls), app) : createServer(app);
  server.keepAliveTimeout = 65_000;
  // Before listening: it takes over each connection from its first byte (one parser per socket).
  acceptListMethod(server, tls ? 'secureConnection' : 'connection');
  return new Promise((resolve, reject) => {
    const refused = (err: NodeJS.ErrnoException) => reject(new ListenFailed(address, port, err.code ?? err.message));
    server.once('error', refused);
    server.listen(port, address, () => {
      server.off('error', refused);
      resolve(server);
    });
  });
}

/**
 * Starts one stateless broker process: migrate the store, connect mounts, serve HTTP, reap on a
 * schedule. Nothing here reads the lease table at start, so start-up does not grow with it.
 */
export async function startBroker(config: BrokerConfig, opts: StartOptions): Promise<Broker> {
  const engines = opts.engines ?? allEngines;
  const log = redactingFor(opts.log, engines);
  const storeTls = pgTlsOptions(config.store.url, config.store.ssl, 'store');
  const unverified = unverifiedTlsWarning('the lease store', storeTls);
  if (unverified) log.warn(unverified);
  const pool: pg.Pool = createStorePool(storeTls, config.store.max_connections, log, config.store.query_timeout * 1000);
  let mounts: MountRegistry | undefined;
  const processLock = new ProcessLock(storeTls, log);
  try {
    // Migrations run unbounded, on a connection of their own: they may wait for another replica's.
    const migrations = createStorePool(storeTls, 1, log);
    const applied = await migrate(migrations)
      .catch((err: unknown) => {
        throw explainStoreError(err);
      })
      .finally(() => migrations.end());
    if (applied.length) log.info({ applied }, 'migrations applied');
    await processLock.acquire();
    mounts = await MountRegistry.connect(config, engines, log);
  } catch (err) {
    await processLock.close();
    await pool.end().catch(() => undefined);
    throw err;
  }

  const store = new LeaseStore(pool, () => processLock.holder());
  const metrics = new BrokerMetrics({ store: pool, mounts, authMounts: Object.keys(config.auth) });
  const auditor = createAuditor(config.audit, { storePool: pool, log, fields: auditFieldsFor(engines), metrics });
  const revoker = new Revoker(
    store,
    mounts,
    config.reaper,
    log,
    (event) => auditor.event({ request_id: `reaper:${event.lease_id}`, ...event }),
    metrics,
  );
  const leases = new LeaseService(store, mounts, revoker, config.reaper, log, config.engine_timeout, metrics);
  const reaper = new Reaper(store, revoker, config.reaper, log, metrics);

  const jobRunner = new RevokeJobRunner(
    { store, mounts, revoker, policy: config.reaper, log, engineTimeoutSeconds: config.engine_timeout },
    log,
    {
      progress: (_job, outcomes) => {
        const failed = outcomes.filter((o) => o.outcome === 'failed').length;
        metrics.revokeJobOutcomes(outcomes.length - failed, failed);
      },
      finished: (job) =>
        auditor.event({
          request_id: `job:${job.id}`,
          operation: 'revoke-job-finished',
          data: {
            job: job.id,
            total: job.total,
            revoked: job.revoked,
            failed: job.failed,
            requested_by: job.requested_by,
          },
        }),
    },
  );
  const jobs = new RevokeJobs(pool, jobRunner);

  const reaperPause = reaperPauseControl(pool);
  const alerts = startAlerts(config.alerts, {
    auditor,
    metrics,
    log,
    store: pool,
    reaperPause,
    source: `credbroker@${hostname()}`,
  });
  const sweeper = new Sweeper({
    store: pool,
    mounts,
    modeOf: (mount) => config.mounts[mount]?.sweep ?? 'report',
    graceSeconds: config.sweep.grace,
    audit: (event) => auditor.event(event),
    metrics,
    log,
  });
  const tokens = new TokenStore(pool);
  const auth = new AuthService(config.root_token, config.auth, tokens, log, metrics);
  const app = createApp({
    leases,
    auth,
    policies: new PolicySet(config.policies),
    auditor,
    wrapping: new WrappingService(pool, leases),
    reaperPause,
    sweeper,
    jobs,
    auditStore: config.audit?.postgres ? pool : null,
    log,
    metrics,
    discovery: { mounts, authMounts: config.auth },
    health: {
      version: VERSION,
      clusterName: 'credbroker',
      reaperPaused: () => reaperPause.isPaused(),
      storeReachable: () =>
        pool.query('SELECT 1').then(
          () => true,
          () => false,
        ),
    },
  });
  let server: Server;
  try {
    server = await listen(app, config.listen.address, config.listen.port, config.listen.tls);
  } catch (err) {
    // Nothing may stay open behind a failed start: a caller that exits must be able to.
    await mounts.close().catch(() => undefined);
    await alerts.close().catch(() => undefined);
    await auditor.close().catch(() => undefined);
    await processLock.close();
    await pool.end().catch(() => undefined);
    throw err;
  }
  const { port } = server.address() as AddressInfo;

  const task =
    opts.reaper === false
      ? null
      : cron.schedule(config.reaper.schedule, () => reaper.tick(), { name: 'reaper', noOverlap: true });
  // A replica (re)started after a crash takes up the backlog now, not at the schedule's next
  // boundary: under a crash loop that wait would add up to a whole period to every revocation.
  if (task) void reaper.tick();
  const tokenTask =
    opts.reaper === false
      ? null
      : cron.schedule(
          '*/5 * * * * *',
          // An expired token's leases go with it: an expiry, held like the reaper's while it is paused
          // (a restored store's tokens look expired too). Revoking a token explicitly still runs.
          () =>
            reaperPause
              .isPaused()
              .then((paused) => (paused ? 0 : expireTokensOnce(tokens, leases, log)))
              .catch((err) => log.warn({ err: (err as Error).message }, 'token expiry sweep failed')),
          {
            name: 'token-expiry',
            noOverlap: true,
          },
        );
  const tidyTask = opts.reaper === false ? null : scheduleTidy(pool, config, log);
  const sweepTask = opts.reaper === false ? null : scheduleSweep(sweeper, config.sweep.schedule, log);
  // Every replica looks for a revoke job nobody runs (a new one, or one whose process died).
  const jobTask =
    opts.reaper === false
      ? null
      : cron.schedule('*/2 * * * * *', () => jobRunner.tick(), { name: 'revoke-jobs', noOverlap: true });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await task?.destroy();
      await tokenTask?.destroy();
      await tidyTask?.destroy();
      await sweepTask?.destroy();
      await jobTask?.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await reaper.stop();
      await jobRunner.stop();
      await mounts!.close();
      await alerts.close();
      await auditor.close();
      await processLock.close();
      await pool.end();
    })());

  const tls = config.listen.tls;
  const reloadTls = () => {
    if (!tls) return;
    try {
      const { serialNumber, ...credentials } = loadListenerCredentials(tls);
      (server as HttpsServer).setSecureContext(credentials);
      log.info({ serial_number: serialNumber, cert_file: tls.cert_file }, 'listener certificate reloaded');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'listener certificate not reloaded: the previous one stays in use');
    }
  };
  const host = config.listen.address.includes(':') ? `[${config.listen.address}]` : config.listen.address;
  const url = `${tls ? 'https' : 'http'}://${host}:${port}`;
  if (!tls && !isLoopback(config.listen.address)) {
    log.warn(
      { address: config.listen.address },
      'listening on plain HTTP beyond loopback: tokens and credentials cross the network in clear; set listen.tls',
    );
  }
  log.info({ url, mounts: mounts.names() }, 'credbroker listening');
  return {
    url,
    port,
    leases,
    reaper,
    jobs,
    jobRunner,
    store,
    mounts,
    metrics,
    alerts,
    auditor,
    auth,
    sweeper,
    reloadTls,
    close,
  };
}
