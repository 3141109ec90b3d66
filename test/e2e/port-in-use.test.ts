import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshStoreDatabase, pgUrl } from '../support/pg.js';

/** The built CLI, as `npx credbroker` runs it, started on a port another process already holds. */
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const EXIT_TIMEOUT_MS = 60_000;

let occupier: Server;
let busyPort: number;
const workDir = mkdtempSync(join(tmpdir(), 'credbroker-port-e2e-'));

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN', 'CREDBROKER_ROOT_TOKEN'])
    delete env[key];
  return env;
}

/** Runs the CLI to its exit; a process still running after the timeout is killed and reported as hung. */
function run(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; hung: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, EXIT_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, hung, stdout, stderr });
    });
  });
}

/** Command lines of the live processes that mention `text` (a postgres started on a data dir there). */
function processesMentioning(text: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmdline.includes(text)) found.push(`${pid}: ${cmdline}`);
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with \`npm run build\` (npm test does)`);
  occupier = createServer();
  await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve));
  busyPort = (occupier.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((resolve) => occupier?.close(resolve));
  rmSync(workDir, { recursive: true, force: true });
});

describe('a port already in use', () => {
  it(
    '`credbroker dev` says so, exits 1, and leaves no embedded PostgreSQL nor its temp dir behind',
    { timeout: EXIT_TIMEOUT_MS + 10_000 },
    async () => {
      // dev's temporary data dir goes under TMPDIR: a directory of this test's own, to check it is
      // left empty. As root the embedded server runs as `postgres`, which must traverse it.
      const devTmp = join(workDir, 'dev-tmp');
      mkdirSync(devTmp);
      chmodSync(workDir, 0o755);
      chmodSync(devTmp, 0o777);

      const result = await run(['dev', '--port', String(busyPort), '--root-token', 'port-e2e-root-token-0123456789'], {
        TMPDIR: devTmp,
      });
      expect(result.hung, `still running ${EXIT_TIMEOUT_MS} ms later\n${result.stderr}`).toBe(false);
      expect(result.stderr).toContain(
        `error: port ${busyPort} on 127.0.0.1 is already in use; pass --port or stop the other process\n`,
      );
      expect(result.stderr).not.toMatch(/^ {4}at /m);
      expect(result.stderr).not.toContain('destructure');
      expect(result.code).toBe(1);
      expect(result.stdout).not.toContain('credbroker dev is running');
      expect(readdirSync(devTmp)).toEqual([]);
      expect(processesMentioning(devTmp)).toEqual([]);
    },
  );

  it('`credbroker server` says so and exits 1 instead of hanging', { timeout: EXIT_TIMEOUT_MS + 10_000 }, async () => {
    const config = join(workDir, 'server.yaml');
    writeFileSync(
      config,
      [
        `listen: { address: 127.0.0.1, port: ${busyPort} }`,
        'store: { url: "${env:PORT_E2E_STORE_URL}" }',
        'root_token: "${env:PORT_E2E_ROOT_TOKEN}"',
        'log_level: error',
        'mounts: {}',
        '',
      ].join('\n'),
    );
    const started = Date.now();
    const result = await run(['server', '--config', config], {
      PORT_E2E_STORE_URL: pgUrl(await freshStoreDatabase('port')),
      PORT_E2E_ROOT_TOKEN: 'port-e2e-root-token-0123456789',
    });
    expect(result.hung, `still running ${EXIT_TIMEOUT_MS} ms later\n${result.stderr}`).toBe(false);
    expect(result.stderr).toContain(
      `error: port ${busyPort} on 127.0.0.1 is already in use; change listen in ${config} or stop the other process\n`,
    );
    expect(result.stderr).not.toMatch(/^ {4}at /m);
    expect(result.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});
