import { Agent, fetch as undiciFetch } from 'undici';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { packageRoot } from '../../src/package-root.js';
import { randomName, randomSecret } from '../../src/random.js';
import { freePort, startEmbeddedPostgres, type EmbeddedServer } from '../../src/store/embedded-postgres.js';

export const ROOT_TOKEN = process.env.BENCH_ROOT_TOKEN ?? `bench-root-${randomSecret()}`;

/** One real PostgreSQL for the whole run: lease stores and targets, raw and broker alike. */
export async function startCluster(): Promise<EmbeddedServer> {
  return startEmbeddedPostgres({ password: randomSecret(), persistent: false });
}

export async function sql<R extends pg.QueryResultRow = any>(
  server: EmbeddedServer,
  database: string,
  text: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: server.url(database) });
  await client.connect();
  try {
    return (await client.query<R>(text, params)).rows;
  } finally {
    await client.end();
  }
}

/** Drops every role whose name starts with `prefix_` (and what it holds in `database`), server side. */
export async function dropRoles(server: EmbeddedServer, prefix: string, database = 'postgres'): Promise<void> {
  await sql(
    server,
    database,
    `DO $$ DECLARE r text; BEGIN
       FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '${prefix}\\_%' LOOP
         EXECUTE format('DROP OWNED BY %I', r); EXECUTE format('DROP ROLE %I', r);
       END LOOP;
     END $$`,
  );
}

/** Creates `count` login roles named `<prefix>_<i>` in one server-side loop (fast bulk set-up). */
export async function createRoles(server: EmbeddedServer, prefix: string, count: number, group: string): Promise<void> {
  await sql(
    server,
    'postgres',
    `DO $$ BEGIN FOR i IN 1..${count} LOOP EXECUTE format('CREATE ROLE %I LOGIN IN ROLE %I', '${prefix}_' || i, '${group}'); END LOOP; END $$`,
  );
}

export async function createDatabase(server: EmbeddedServer, name: string): Promise<void> {
  await sql(server, 'postgres', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await sql(server, 'postgres', `CREATE DATABASE ${name}`);
}

export interface BrokerProcess {
  url: string;
  child: ChildProcess;
  /** Milliseconds from spawn to the first healthy answer. */
  startupMs: number;
  rssKb(): number;
  stop(): Promise<void>;
}

/** The real `credbroker server` in its own process, configured through a YAML file with refs. */
export async function startBrokerProcess(
  server: EmbeddedServer,
  opts: {
    store: string;
    mounts: Record<string, unknown>;
    reaper?: Record<string, unknown>;
    extra?: Record<string, unknown>;
    env?: Record<string, string>;
    /** Serve https with this certificate; `ca` is what clients trust. */
    tls?: { cert_file: string; key_file: string; ca: string };
  },
): Promise<BrokerProcess> {
  const port = await freePort();
  const config = {
    listen: {
      address: '127.0.0.1',
      port,
      ...(opts.tls ? { tls: { cert_file: opts.tls.cert_file, key_file: opts.tls.key_file } } : {}),
    },
    store: {
      url: `postgres://postgres:\${env:BENCH_PG_PASSWORD}@127.0.0.1:${server.port}/${opts.store}`,
      max_connections: 20,
    },
    root_token: '${env:BENCH_ROOT_TOKEN}',
    log_level: 'warn',
    reaper: opts.reaper ?? {},
    mounts: opts.mounts,
    ...opts.extra,
  };
  const file = join(tmpdir(), `credbroker-bench-${randomName(8)}.yaml`);
  writeFileSync(file, stringify(config));
  const started = performance.now();
  const child = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'server', '--config', file], {
    env: { ...process.env, ...opts.env, BENCH_PG_PASSWORD: server.password, BENCH_ROOT_TOKEN: ROOT_TOKEN },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const dispatcher = opts.tls ? new Agent({ connect: { ca: opts.tls.ca } }) : undefined;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker exited: ${stderr}`);
    const ok = await undiciFetch(`${url}/v1/sys/health`, dispatcher ? { dispatcher } : {}).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const startupMs = performance.now() - started;
  await dispatcher?.close();
  return {
    url,
    child,
    startupMs,
    rssKb: () => readRssKb(child.pid!),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

function readRssKb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** A minimal pg mount config for the bench target database. */
export function postgresMount(server: EmbeddedServer, database: string, extra: Record<string, unknown>) {
  return {
    type: 'postgres',
    connection_url: `postgres://postgres:\${env:BENCH_PG_PASSWORD}@127.0.0.1:${server.port}/${database}`,
    ...extra,
  };
}
