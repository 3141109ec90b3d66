import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { startBroker } from '../broker.js';
import { configSchema, type BrokerConfig } from '../config/schema.js';
import { ListenFailed } from '../errors.js';
import { createLogger } from '../log.js';
import { randomSecret } from '../random.js';
import { startEmbeddedPostgres } from '../store/embedded-postgres.js';
import { devCertificates, type DevTls } from './dev-tls.js';

export interface DevOptions {
  port: number;
  address: string;
  data?: string;
  rootToken?: string;
  logLevel: string;
  /** https with a throwaway CA made in the data dir (or a temporary one). */
  tls?: boolean;
}

/** The demo target: a table, and a group role holding the only grant on it. */
const DEMO_SETUP = `
  DO $$ BEGIN CREATE ROLE demo_readers NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
  CREATE TABLE IF NOT EXISTS public.orders (id serial PRIMARY KEY, customer text NOT NULL, amount numeric(10,2) NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
  INSERT INTO public.orders (customer, amount) SELECT c, a FROM (VALUES ('acme', 120.50), ('globex', 75.00), ('initech', 310.25)) v(c, a)
    WHERE NOT EXISTS (SELECT 1 FROM public.orders);
  GRANT CONNECT ON DATABASE demo TO demo_readers;
  GRANT USAGE ON SCHEMA public TO demo_readers;
  GRANT SELECT ON ALL TABLES IN SCHEMA public TO demo_readers;
`;

async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
}

/** The superuser password of a --data dir, kept beside it (0600) so restarts find it. */
async function devPassword(dataDir: string | undefined): Promise<string> {
  if (!dataDir) return randomSecret();
  const file = join(dataDir, 'dev-superuser-password');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const password = randomSecret();
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  return password;
}

/** Which option set each config key dev fills in, so a refusal names what the user typed. */
const OPTION_OF: Record<string, string> = {
  root_token: '--root-token',
  'listen.address': '--address',
  'listen.port': '--port',
  log_level: '--log-level',
};

/** The broker config of a dev run, from its options and the embedded server's URLs. */
function devConfig(opts: DevOptions, rootToken: string, url: (database: string) => string, tls?: DevTls): BrokerConfig {
  const result = configSchema.safeParse({
    listen: { address: opts.address, port: opts.port, ...(tls ? { tls: tls.listen } : {}) },
    store: { url: url('credbroker') },
    root_token: rootToken,
    log_level: opts.logLevel,
    mounts: {
      demo: {
        type: 'postgres',
        connection_url: url('demo'),
        roles: { readonly: { member_of: ['demo_readers'], default_ttl: '1h', max_ttl: '24h' } },
      },
    },
  });
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const key = issue.path.join('.');
    return `${OPTION_OF[key] ?? key}: ${issue.message}`;
  });
  throw new Error(problems.join('; '));
}

/** `credbroker dev`: one process, an embedded PostgreSQL as lease store and demo target. */
export async function runDev(opts: DevOptions): Promise<void> {
  const rootToken = opts.rootToken ?? `cbr.${randomSecret()}`;
  // Every option is checked before the database starts: a typo costs no start-up, and the
  // embedded server's exit hook is not yet there to turn the failure into exit code 0.
  devConfig(opts, rootToken, (database) => `postgres://placeholder/${database}`);
  // embedded-postgres installs its own SIGINT/SIGTERM handlers that stop the server under the
  // broker's feet and exit non-zero; this command shuts down in order itself.
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  const dataDir = opts.data ? resolve(opts.data) : undefined;
  if (dataDir) {
    await mkdir(dataDir, { recursive: true });
    await chmod(dataDir, 0o755); // the postgres OS user must traverse it
  }
  const password = await devPassword(dataDir);
  const tlsDir = opts.tls
    ? dataDir
      ? join(dataDir, 'tls')
      : await mkdtemp(join(tmpdir(), 'credbroker-dev-tls-'))
    : undefined;
  const tls = tlsDir ? await devCertificates(tlsDir, opts.address) : undefined;
  const removeTemporaryTls = () =>
    tlsDir && !dataDir ? rm(tlsDir, { recursive: true, force: true }) : Promise.resolve();
  process.stderr.write('starting embedded PostgreSQL…\n');
  const server = await startEmbeddedPostgres({
    dataDir: dataDir && join(dataDir, 'pg'),
    password,
    persistent: Boolean(dataDir),
  });
  const log = createLogger(opts.logLevel);
  let broker: Awaited<ReturnType<typeof startBroker>> | undefined;
  try {
    await ensureDatabase(server.url('postgres'), 'credbroker');
    await ensureDatabase(server.url('postgres'), 'demo');
    const demo = new pg.Client({ connectionString: server.url('demo') });
    await demo.connect();
    await demo.query(DEMO_SETUP).finally(() => demo.end());

    const config = devConfig(opts, rootToken, server.url, tls);
    broker = await startBroker(config, { log });
    process.stdout.write(
      [
        '',
        'credbroker dev is running: an embedded PostgreSQL is both the lease store and the demo target.',
        dataDir
          ? `Data: ${dataDir} (kept across restarts)`
          : 'Data: a temporary directory, deleted on exit (use --data DIR to keep it).',
        '',
        'In another shell:',
        `  export CREDBROKER_ADDR=${broker.url}`,
        `  export CREDBROKER_TOKEN=${rootToken}`,
        ...(tls ? [`  export CREDBROKER_CACERT=${tls.caFile}`] : []),
        '  npx credbroker creds demo/readonly --format env --out demo.env',
        "  set -a; . ./demo.env; set +a; psql -c 'SELECT * FROM orders'",
        '',
        'Or with curl:',
        `  curl -s${tls ? ' --cacert "$CREDBROKER_CACERT"' : ''} -H "X-Vault-Token: $CREDBROKER_TOKEN" ${broker.url}/v1/demo/creds/readonly`,
        '',
        'Ctrl-C stops the broker and the embedded PostgreSQL.',
        '',
      ].join('\n'),
    );
  } catch (err) {
    // Stopping the embedded server also deletes its temporary data directory.
    await broker?.close().catch(() => undefined);
    await server.stop().catch(() => undefined);
    await removeTemporaryTls();
    if (err instanceof ListenFailed) {
      throw new Error(
        `${err.message}; ${err.reason === 'EADDRINUSE' ? 'pass --port or stop the other process' : 'pass another --address or --port'}`,
      );
    }
    throw err;
  }

  process.on('SIGHUP', () => broker.reloadTls());
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  process.stderr.write('stopping…\n');
  await broker.close();
  await server.stop();
  await removeTemporaryTls();
  process.stderr.write('stopped\n');
}
