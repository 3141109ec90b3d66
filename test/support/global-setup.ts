import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/store/embedded-postgres.js';
import { migrate } from '../../src/store/migrate.js';
import { randomSecret } from '../../src/random.js';
import { packageRoot } from '../../src/package-root.js';
import { assertDistFresh } from './dist-fresh.js';

export const TEMPLATE_DB = 'credbroker_template';

declare module 'vitest' {
  export interface ProvidedContext {
    pg: { port: number; password: string };
  }
}

/**
 * One real PostgreSQL server for the whole run (with SCRAM password auth), and a template
 * database already migrated, from which every test file clones its own lease store.
 *
 * First, dist/ must be as new as the sources: several tests run it in child processes. This
 * checks rather than builds, so a run never rewrites dist/ under another run's children in the
 * same tree, and `npm test` (which builds first) stays the one way to build and test.
 */
export default async function setup(project: TestProject) {
  assertDistFresh(packageRoot());
  // Every statement is logged, for the secret sweep at the end of the run (reliability-run.ts).
  const sweepDir = process.env.CREDBROKER_SWEEP_DIR;
  const statementLog = sweepDir ? createWriteStream(join(sweepDir, 'pg-statements.log'), { flags: 'a' }) : null;
  const server = await startEmbeddedPostgres({
    password: randomSecret(),
    persistent: false,
    ...(statementLog
      ? {
          flags: ['-c', 'log_statement=all', '-c', 'log_line_prefix=%m [%p] %a: '],
          onLog: (message: string) => void statementLog.write(`${message}\n`),
        }
      : {}),
  });
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  await admin.end();
  const pool = new pg.Pool({ connectionString: server.url(TEMPLATE_DB), max: 1 });
  await migrate(pool);
  await pool.end();
  project.provide('pg', { port: server.port, password: server.password });
  return async () => {
    await server.stop();
    await new Promise((resolve) => (statementLog ? statementLog.end(resolve) : resolve(undefined)));
  };
}
