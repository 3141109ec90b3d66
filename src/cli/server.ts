import { startBroker } from '../broker.js';
import { loadConfigFile } from '../config/load.js';
import { ListenFailed } from '../errors.js';
import { createLogger } from '../log.js';
import { migrate } from '../store/migrate.js';
import { explainStoreError, pgTlsOptions } from '../store/pg-ssl.js';
import { createStorePool } from '../store/pool.js';

/** `credbroker server`: runs until SIGINT/SIGTERM, then drains and exits. */
export async function runServer(configPath: string): Promise<void> {
  const config = loadConfigFile(configPath);
  const log = createLogger(config.log_level);
  const broker = await startBroker(config, { log }).catch((err: unknown) => {
    if (err instanceof ListenFailed) {
      throw new Error(
        `${err.message}; change listen in ${configPath}${err.reason === 'EADDRINUSE' ? ' or stop the other process' : ''}`,
      );
    }
    throw err;
  });
  // Log rotation and certificate renewal: reopen audit files in place, re-read the listener's certificate.
  process.on('SIGHUP', () => {
    broker.reloadTls();
    void broker.auditor.reopen().catch((err) => log.error({ err: (err as Error).message }, 'audit reopen failed'));
  });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  log.info('shutting down');
  await broker.close();
}

/** `credbroker migrate`: applies pending migrations and exits. */
export async function runMigrate(configPath: string): Promise<void> {
  const config = loadConfigFile(configPath);
  const log = createLogger(config.log_level);
  const pool = createStorePool(pgTlsOptions(config.store.url, config.store.ssl, 'store'), 1, log);
  try {
    const applied = await migrate(pool, undefined, { newerSchema: 'refuse' }).catch((err: unknown) => {
      throw explainStoreError(err);
    });
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'the lease store is up to date\n');
  } finally {
    await pool.end();
  }
}
