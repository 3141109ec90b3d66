import { spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEnvLines } from '../../src/cli/credential-env.js';
import { startHealthServer } from '../../src/agent/health-server.js';
import { runOnRotate } from '../../src/agent/on-rotate.js';
import { writeFileAtomic } from '../../src/cli/write-file-atomic.js';
import { freePort } from '../../src/store/embedded-postgres.js';
import { api, startTestBroker } from '../support/broker.js';
import { CLI, runCli } from '../support/cli.js';
import {
  K8S_ISSUER,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  roleExists,
} from '../support/pg.js';
import { sweepLogPath } from '../support/secret-recorder.js';
import { sleep, waitUntil } from '../support/wait.js';

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'agente2e';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let server: TestBroker;
let cluster: JwksServer;
let storeDb: string;
const work = mkdtempSync(join(tmpdir(), 'credbroker-agent-e2e-'));
const jwtFile = join(work, 'sa-token');

beforeAll(async () => {
  cluster = await startJwksServer({ algs: ['RS256'], issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('agente2e');
  server = await startTestBroker({
    storeDatabase: storeDb,
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: {
      reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
      // A renewal at ~2/3 of 3 s, capped by max_ttl 6 s: the sidecar rotates before 6 s are up.
      rotating: { member_of: [target.group], default_ttl: '3s', max_ttl: '6s' },
    },
    auth: {
      // An ETL job's lease outlives the login token of the init container that took it.
      kubernetes: kubernetesAuthMount(cluster, {
        etl: kubernetesRole('etl', ['etl'], { revoke_leases_with_token: false }),
      }),
    },
    policies: { etl: [{ path: 'db/creds/*', capabilities: ['read', 'update'] }] },
  });
  writeFileSync(jwtFile, await cluster.sign(kubernetesClaims({ namespace: 'etl', serviceAccount: 'etl' })));
});

afterAll(async () => {
  await server?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
  rmSync(work, { recursive: true, force: true });
});

let configs = 0;
/** A directory of its own for a test's files, and its agent config. */
function agentSetup(opts: { role?: string; podUid?: string; files?: string; onRotate?: string; health?: string } = {}) {
  const dir = join(work, `case-${++configs}`);
  mkdirSync(dir);
  const podUid = opts.podUid ?? `pod-${configs}-${Math.random().toString(36).slice(2, 8)}`;
  const files =
    opts.files ??
    [
      `      - { path: ${dir}/pg.env, format: env }`,
      `      - { path: ${dir}/pgpass, format: pgpass, mode: "0400" }`,
    ].join('\n');
  const config = join(dir, 'agent.yaml');
  writeFileSync(
    config,
    [
      'broker:',
      `  address: ${server.url}`,
      'auth:',
      '  mount: kubernetes',
      '  role: etl',
      `  jwt_file: ${jwtFile}`,
      'pod_uid: ${env:POD_UID}',
      `state_file: ${dir}/.credbroker-agent.json`,
      ...(opts.health ? [`health: { address: "${opts.health}" }`] : []),
      'leases:',
      '  - name: warehouse',
      `    path: db/creds/${opts.role ?? 'reader'}`,
      '    files:',
      files,
      ...(opts.onRotate ? [`    on_rotate: ${opts.onRotate}`] : []),
    ].join('\n'),
  );
  const env = { ...process.env, POD_UID: podUid };
  for (const name of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN']) delete env[name];
  return { dir, config, podUid, env, statePath: join(dir, '.credbroker-agent.json') };
}

/** The agent's stderr goes into the run's secret sweep too. */
function sweep(stderr: string): void {
  const path = sweepLogPath('agent');
  if (path) appendFileSync(path, stderr);
}

async function runOnce(setup: ReturnType<typeof agentSetup>) {
  const run = await runCli(['agent', '--config', setup.config, '--once'], { env: setup.env });
  sweep(run.stderr);
  return run;
}

interface Sidecar {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

function startSidecar(setup: ReturnType<typeof agentSetup>): Sidecar {
  const child = spawn(process.execPath, [CLI, 'agent', '--config', setup.config], {
    env: setup.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      sweep(stderr);
      resolve(code);
    }),
  );
  return { child, stderr: () => stderr, exited };
}

const state = (setup: { statePath: string }) =>
  JSON.parse(readFileSync(setup.statePath, 'utf8')) as {
    leases: Record<string, { lease_id: string; expire_time: string; files: string[]; generation: number }>;
  };

/** The pod's lease rows in the store: its idempotency key's first lease and every rotation of it. */
const rowsOf = (leaseIds: string[]) =>
  adminQuery<{ id: string; state: string; expires_at: Date }>(
    storeDb,
    'SELECT id, state, expires_at FROM credbroker_leases WHERE id = ANY($1) ORDER BY issued_at',
    [leaseIds],
  );
/** Every lease row issued since `since`, whatever its state: the tests of this file run one at a time. */
const rowsIssuedSince = (since: Date) =>
  adminQuery<{ id: string; state: string }>(storeDb, 'SELECT id, state FROM credbroker_leases WHERE issued_at >= $1', [
    since,
  ]);
const liveRows = () =>
  adminQuery<{ id: string }>(storeDb, `SELECT id FROM credbroker_leases WHERE state IN ('pending', 'active')`);

const envFile = (dir: string) => parseEnvLines(readFileSync(join(dir, 'pg.env'), 'utf8'));
const loginWith = (env: Record<string, string>) =>
  loginAs({
    username: env.PGUSER!,
    password: env.PGPASSWORD!,
    host: env.PGHOST!,
    port: Number(env.PGPORT),
    database: env.PGDATABASE!,
  });
async function canLogIn(env: Record<string, string>): Promise<boolean> {
  try {
    const client = await loginWith(env);
    await client.query('SELECT 1');
    await client.end();
    return true;
  } catch {
    return false;
  }
}

describe('credbroker agent --once, then the sidecar', () => {
  it('the sidecar adopts the init container’s lease: one lease row for the pod, renewed, revoked on SIGTERM with its role', async () => {
    const health = `127.0.0.1:${await freePort()}`;
    const setup = agentSetup({ health });
    const before = (await liveRows()).length;
    const start = new Date(Date.now() - 1000);
    const once = await runOnce(setup);
    expect(once.code, once.stderr).toBe(0);
    const leaseId = state(setup).leases.warehouse!.lease_id;
    expect(leaseId).toMatch(/^db\/creds\/reader\//);
    const env = envFile(setup.dir);
    expect(await canLogIn(env)).toBe(true);
    // The state file names the lease, never its credential.
    expect(readFileSync(setup.statePath, 'utf8')).not.toContain(env.PGPASSWORD!);
    const [issued] = await rowsOf([leaseId]);
    expect(issued!.state).toBe('active');

    const sidecar = startSidecar(setup);
    try {
      await waitUntil(async () => (await fetch(`http://${health}/ready`).catch(() => null))?.status === 200, {
        timeoutMs: 15_000,
        what: `the sidecar to be ready (${sidecar.stderr()})`,
      });
      // Exactly one lease for the pod, ever: the init container's, now the sidecar's.
      expect((await rowsIssuedSince(start)).map((r) => [r.id, r.state])).toEqual([[leaseId, 'active']]);
      expect((await liveRows()).length).toBe(before + 1);
      expect(sidecar.stderr()).toContain(`adopted ${leaseId}`);
      const [adopted] = await rowsOf([leaseId]);
      expect(adopted!.expires_at.getTime()).toBeGreaterThan(issued!.expires_at.getTime());
      expect(envFile(setup.dir).PGPASSWORD).toBe(env.PGPASSWORD);
      sidecar.child.kill('SIGTERM');
      expect(await sidecar.exited).toBe(0);
    } finally {
      if (sidecar.child.exitCode === null) sidecar.child.kill('SIGKILL');
    }
    const [revoked] = await rowsOf([leaseId]);
    expect(revoked!.state).toBe('revoked');
    expect(await roleExists(env.PGUSER!)).toBe(false);
    expect(await canLogIn(env)).toBe(false);
    expect((await liveRows()).length).toBe(before);
    expect(state(setup).leases.warehouse).toBeUndefined();
  });

  it('a sidecar killed and restarted (a crash loop) adopts its own lease again: still one lease row for the pod', async () => {
    const health = `127.0.0.1:${await freePort()}`;
    const setup = agentSetup({ health });
    const start = new Date(Date.now() - 1000);
    const ready = (sidecar: Sidecar) =>
      waitUntil(async () => (await fetch(`http://${health}/ready`).catch(() => null))?.status === 200, {
        timeoutMs: 15_000,
        what: `the sidecar to be ready (${sidecar.stderr()})`,
      });
    const sidecars: Sidecar[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const sidecar = startSidecar(setup);
        sidecars.push(sidecar);
        await ready(sidecar);
        if (i < 2) {
          sidecar.child.kill('SIGKILL');
          await sidecar.exited;
        }
      }
      const leaseId = state(setup).leases.warehouse!.lease_id;
      expect(sidecars[2]!.stderr()).toContain(`adopted ${leaseId}`);
      expect((await rowsIssuedSince(start)).map((r) => [r.id, r.state])).toEqual([[leaseId, 'active']]);
      sidecars[2]!.child.kill('SIGTERM');
      expect(await sidecars[2]!.exited).toBe(0);
      expect((await rowsIssuedSince(start)).map((r) => r.state)).toEqual(['revoked']);
    } finally {
      for (const sidecar of sidecars) if (sidecar.child.exitCode === null) sidecar.child.kill('SIGKILL');
    }
  });

  it('a lease whose credential was never written down (a crash after leasing) is revoked, and one new lease serves the pod', async () => {
    const setup = agentSetup();
    // What an init container that died between the answer and its files leaves: a live lease on the pod's key.
    const login = await api(
      server,
      'PUT',
      'auth/kubernetes/login',
      { role: 'etl', jwt: readFileSync(jwtFile, 'utf8') },
      null,
    );
    expect(login.status).toBe(200);
    const lost = await fetch(`${server.url}/v1/db/creds/reader`, {
      method: 'PUT',
      headers: {
        'x-vault-token': login.body.auth.client_token,
        'x-credbroker-idempotency-key': `${setup.podUid}/warehouse`,
      },
    }).then((r) => r.json() as Promise<{ lease_id: string; data: { username: string } }>);
    const run = await runOnce(setup);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`${lost.lease_id} holds this pod's key`);
    const leaseId = state(setup).leases.warehouse!.lease_id;
    expect(leaseId).not.toBe(lost.lease_id);
    const rows = await rowsOf([lost.lease_id, leaseId]);
    expect(rows.map((r) => r.state)).toEqual(['revoked', 'active']);
    expect(await roleExists(lost.data.username)).toBe(false);
    expect(await canLogIn(envFile(setup.dir))).toBe(true);

    // Files gone but the lease live (an emptyDir wiped): its credential cannot be read again, so it is replaced.
    rmSync(join(setup.dir, 'pg.env'));
    const again = await runOnce(setup);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain('missing');
    const replaced = state(setup).leases.warehouse!.lease_id;
    expect(replaced).not.toBe(leaseId);
    expect((await rowsOf([leaseId, replaced])).map((r) => r.state)).toEqual(['revoked', 'active']);
    expect(await canLogIn(envFile(setup.dir))).toBe(true);
    await api(server, 'PUT', 'sys/leases/revoke', { lease_id: replaced });
  });

  it('rotates before max TTL: new lease, files rewritten, on_rotate run, old lease revoked and its role dropped', async () => {
    const setup = agentSetup({ role: 'rotating' });
    const marker = join(setup.dir, 'rotated');
    const onRotate = `{ command: [/bin/sh, -c, "echo rotated >> ${marker}"] }`;
    writeFileSync(setup.config, `${readFileSync(setup.config, 'utf8')}\n    on_rotate: ${onRotate}\n`);
    const sidecar = startSidecar(setup);
    try {
      const first = await waitUntil(() => existsSync(setup.statePath) && state(setup).leases.warehouse, {
        timeoutMs: 15_000,
        what: 'the first lease',
      });
      const firstEnv = envFile(setup.dir);
      const second = await waitUntil(
        () => {
          const held = state(setup).leases.warehouse;
          return held && held.lease_id !== first.lease_id && existsSync(marker) ? held : undefined;
        },
        { timeoutMs: 20_000, what: `a rotation (${sidecar.stderr()})` },
      );
      expect(second.generation).toBe(1);
      const secondEnv = envFile(setup.dir);
      expect(secondEnv.PGUSER).not.toBe(firstEnv.PGUSER);
      expect(secondEnv.PGPASSWORD).not.toBe(firstEnv.PGPASSWORD);
      expect(readFileSync(join(setup.dir, 'pgpass'), 'utf8')).toContain(`:${secondEnv.PGUSER}:`);
      expect(await canLogIn(secondEnv)).toBe(true);
      await waitUntil(async () => (await rowsOf([first.lease_id]))[0]!.state === 'revoked', {
        timeoutMs: 10_000,
        what: 'the old lease to be revoked',
      });
      expect(await roleExists(firstEnv.PGUSER!)).toBe(false);
      sidecar.child.kill('SIGTERM');
      expect(await sidecar.exited).toBe(0);
      const held = [first.lease_id, ...[second.lease_id]];
      const last = state(setup).leases.warehouse;
      expect(last).toBeUndefined();
      // Every lease the pod ever held is revoked after SIGTERM, whichever rotation it had reached.
      const all = await adminQuery<{ state: string }>(
        storeDb,
        `SELECT state FROM credbroker_leases WHERE id LIKE 'db/creds/rotating/%' AND id = ANY($1)`,
        [held],
      );
      expect(all.every((r) => r.state === 'revoked')).toBe(true);
      expect(await canLogIn(envFile(setup.dir))).toBe(false);
    } finally {
      if (sidecar.child.exitCode === null) sidecar.child.kill('SIGKILL');
    }
  });
});

describe('sidecar pieces', () => {
  it('GET /ready answers 503 until the files are written, then 200; /health 200 throughout', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const health = await startHealthServer(address);
    try {
      const status = async (path: string) => (await fetch(`http://${address}${path}`)).status;
      expect([await status('/ready'), await status('/health')]).toEqual([503, 200]);
      health.setReady(true);
      expect([await status('/ready'), await status('/health'), await status('/other')]).toEqual([200, 200, 404]);
    } finally {
      await health.close();
    }
  });

  it('on_rotate signal reaches the process named in pid_file', async () => {
    const dir = join(work, 'signal');
    mkdirSync(dir);
    const marker = join(dir, 'hup');
    const app = spawn(
      'bash',
      ['-c', `trap 'echo reloaded >> ${marker}' HUP; echo $$ > ${dir}/app.pid; while :; do sleep 0.1; done`],
      {
        stdio: 'ignore',
      },
    );
    try {
      await waitUntil(() => existsSync(join(dir, 'app.pid')), { timeoutMs: 5000, what: 'the app’s pid file' });
      const lines: string[] = [];
      await runOnRotate({ signal: 'SIGHUP', pid_file: join(dir, 'app.pid') }, (line) => lines.push(line));
      await waitUntil(() => existsSync(marker), { timeoutMs: 5000, what: 'the app to catch SIGHUP' });
      expect(lines).toEqual([`on_rotate: sent SIGHUP to ${app.pid}`]);
    } finally {
      app.kill('SIGKILL');
    }
  });
});

describe('files', () => {
  it('have the configured mode and owner (0440 for 1000:1000), and 0600 for the agent’s own uid by default', async () => {
    expect(process.getuid!()).toBe(0);
    const setup = agentSetup({
      files: [
        `      - { path: ${join(work, 'owned')}/pg.env, format: env, mode: "0440", uid: 1000, gid: 1000 }`,
        `      - { path: ${join(work, 'owned')}/pgpass, format: pgpass }`,
      ].join('\n'),
    });
    mkdirSync(join(work, 'owned'));
    const run = await runOnce(setup);
    expect(run.code, run.stderr).toBe(0);
    const env = statSync(join(work, 'owned', 'pg.env'));
    expect([env.mode & 0o7777, env.uid, env.gid]).toEqual([0o440, 1000, 1000]);
    const pgpass = statSync(join(work, 'owned', 'pgpass'));
    expect([pgpass.mode & 0o7777, pgpass.uid, pgpass.gid]).toEqual([0o600, process.getuid!(), process.getgid!()]);
    await api(server, 'PUT', 'sys/leases/revoke', { lease_id: state(setup).leases.warehouse!.lease_id });
  });

  it('are never half-written: a reader racing 1,000 rewrites only ever sees a whole old or a whole new file', async () => {
    const dir = join(work, 'race');
    mkdirSync(dir);
    const path = join(dir, 'pg.env');
    // Large enough that a non-atomic write is seen part-way; each version is one repeated letter.
    const version = (i: number) => `${String.fromCharCode(65 + (i % 26)).repeat(128 * 1024)}\n`;
    await writeFileAtomic(path, version(0));
    const stop = join(dir, 'stop');
    const reader = spawn(
      process.execPath,
      [
        '-e',
        `const fs = require('fs'); let reads = 0, partial = 0;
         while (!fs.existsSync(${JSON.stringify(stop)})) {
           const text = fs.readFileSync(${JSON.stringify(path)}, 'utf8'); reads++;
           if (text.length !== 128 * 1024 + 1 || text !== (text[0] ?? '').repeat(128 * 1024) + '\\n') partial++;
         }
         process.stdout.write(JSON.stringify({ reads, partial }));`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    reader.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const done = new Promise((resolve) => reader.once('exit', resolve));
    await sleep(200);
    for (let i = 1; i <= 1000; i++) await writeFileAtomic(path, version(i), { mode: 0o440 });
    writeFileSync(stop, '');
    await done;
    const { reads, partial } = JSON.parse(out) as { reads: number; partial: number };
    expect(reads).toBeGreaterThan(100);
    expect(partial).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(version(1000));
  });
});

describe('exit codes', () => {
  it('a login the broker refuses exits 1 with one line saying so, and leases nothing', async () => {
    const setup = agentSetup();
    const badJwt = join(setup.dir, 'bad-token');
    writeFileSync(badJwt, await cluster.sign(kubernetesClaims({ namespace: 'other' })));
    writeFileSync(setup.config, readFileSync(setup.config, 'utf8').replace(jwtFile, badJwt));
    const before = (await liveRows()).length;
    const run = await runOnce(setup);
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toMatch(/cannot log in to .* as etl \(auth\/kubernetes\): .*HTTP 40[03]/);
    expect((await liveRows()).length).toBe(before);
  });

  it('an unknown path exits 1 naming the path', async () => {
    const setup = agentSetup({ role: 'nope' });
    const run = await runOnce(setup);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/cannot lease db\/creds\/nope: .*HTTP 40[034]/);
    expect(existsSync(join(setup.dir, 'pg.env'))).toBe(false);
  });

  it('a file it cannot write exits 1 naming the file, and the lease it took is revoked', async () => {
    const setup = agentSetup();
    const blocker = join(setup.dir, 'not-a-dir');
    writeFileSync(blocker, '');
    writeFileSync(setup.config, readFileSync(setup.config, 'utf8').replace(`${setup.dir}/pgpass`, `${blocker}/pgpass`));
    const before = (await liveRows()).length;
    const run = await runOnce(setup);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot write ${blocker}/pgpass: ENOTDIR`);
    expect((await liveRows()).length).toBe(before);
  });

  it('a config error exits 1 naming the key', async () => {
    const setup = agentSetup({ files: `      - { path: relative/pg.env, format: env, mode: "999" }` });
    const run = await runOnce(setup);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('leases.0.files.0.path: must be an absolute path');
    expect(run.stderr).toContain('leases.0.files.0.mode');
  });
});
