import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT_TOKEN } from './broker.js';
import { pgUrl } from './pg.js';

/** The built CLI, as `npx credbroker` runs it. */
export const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

export interface CliRun {
  /** The exit code; null when the process was killed (then `signal` says by what). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `credbroker <args>` in a child process; never rejects, whatever the exit. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 30_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, signal: (err as { signal?: NodeJS.Signals } | null)?.signal ?? null, stdout, stderr });
      },
    );
  });
}

/**
 * A config file for the CLI on a test store database, secrets as ${env:} refs (as the config
 * loader requires), and the environment that resolves them.
 */
export function storeConfigFile(dir: string, database: string, extra = ''): { path: string; env: NodeJS.ProcessEnv } {
  const url = new URL(pgUrl(database));
  const password = decodeURIComponent(url.password);
  url.password = 'PASSWORD_REF';
  const path = join(dir, `${database}.yaml`);
  writeFileSync(
    path,
    [
      `store:`,
      `  url: ${url.href.replace('PASSWORD_REF', '${env:CLI_TEST_PG_PASSWORD}')}`,
      'root_token: ${env:CLI_TEST_ROOT_TOKEN}',
      'log_level: silent',
      extra,
    ].join('\n'),
  );
  return { path, env: { ...process.env, CLI_TEST_PG_PASSWORD: password, CLI_TEST_ROOT_TOKEN: ROOT_TOKEN } };
}
