import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestBroker } from '../../../../test/support/broker.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  loginAs,
  pgUrl,
  randomName,
  roleExists,
} from '../../../../test/support/pg.js';
import { waitUntil } from '../../../../test/support/wait.js';

/**
 * A leased user attacks its own revocation: a temporary table (which makes DROP ROLE fail), open
 * sessions in two databases of the cluster, objects it owns in another database. Revocation must
 * take its power away first (no login, no session), then clean up; tried with a superuser admin
 * and with a CREATEROLE admin that has only what the README asks for.
 */
const PREFIX = 'rvkpow';
const ADMIN_PASSWORD = `pw-${randomName(16)}`;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
interface Credential {
  username: string;
  password: string;
  host: string;
  port: number;
  database: string;
}

let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
let otherDb: string;
const brokers: TestBroker[] = [];
const clients: pg.Client[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  target = await freshTargetDatabase(PREFIX);
  otherDb = `t_other_${randomName(8)}`;
  await adminQuery('postgres', `CREATE DATABASE ${otherDb}`);
  // The leased users may create tables in both databases: the objects a revoke must deal with.
  await adminQuery(target.database, `GRANT CREATE ON SCHEMA public TO ${target.group}`);
  await adminQuery(otherDb, `GRANT CREATE ON SCHEMA public TO ${target.group}`);
  // The README's superuser-free admin: CREATEROLE, ADMIN OPTION on the group, pg_signal_backend.
  await adminQuery(
    'postgres',
    `CREATE ROLE ${PREFIX}_admin LOGIN CREATEROLE PASSWORD '${ADMIN_PASSWORD}';
     GRANT ${target.group} TO ${PREFIX}_admin WITH ADMIN OPTION;
     GRANT pg_signal_backend TO ${PREFIX}_admin;`,
  );
  // An admin that may create roles but not end sessions (no pg_signal_backend).
  await adminQuery(
    'postgres',
    `CREATE ROLE ${PREFIX}_weak LOGIN CREATEROLE PASSWORD '${ADMIN_PASSWORD}';
     GRANT ${target.group} TO ${PREFIX}_weak WITH ADMIN OPTION;`,
  );
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  for (const b of brokers) await b.close();
  await dropRolesWithPrefix(PREFIX);
});

function adminUrl(user: string, database: string): string {
  const url = new URL(pgUrl(database));
  url.username = user;
  url.password = ADMIN_PASSWORD;
  return url.toString();
}

async function startBroker(
  admin: 'superuser' | 'createrole',
  extra: { mount?: Record<string, unknown> } = {},
): Promise<TestBroker> {
  const broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase('rvkpow'),
    targetDatabase: target.database,
    prefix: PREFIX,
    mount: {
      ...(admin === 'createrole' ? { connection_url: adminUrl(`${PREFIX}_admin`, target.database) } : {}),
      ...extra.mount,
    },
    roles: {
      reader: { member_of: [target.group] },
      stmts: {
        creation_statements: [
          `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE ${target.group}`,
          'GRANT SELECT ON public.items TO "{{name}}"',
        ],
        // Records what the role could still do when the operator's statements ran.
        revocation_statements: [
          `INSERT INTO public.revocation_log SELECT '{{name}}', r.rolcanlogin,
             (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = r.oid) FROM pg_roles r WHERE r.rolname = '{{name}}'`,
          'REVOKE ALL ON public.items FROM "{{name}}"',
          'DROP ROLE "{{name}}"',
        ],
      },
    },
  });
  brokers.push(broker);
  return broker;
}

async function issue(broker: TestBroker, role = 'reader'): Promise<{ leaseId: string; data: Credential }> {
  const res = await api(broker, 'PUT', `db/creds/${role}`, {});
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { leaseId: res.body.lease_id, data: res.body.data };
}

/** A session of the leased user parked in `pg_sleep`, and a promise that settles when it ends. */
async function parkedSession(data: Credential, database: string, setup: string[] = []) {
  const client = await loginAs({ ...data, database });
  clients.push(client);
  client.on('error', () => undefined);
  for (const sql of setup) await client.query(sql);
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  const ended = client.query('SELECT pg_sleep(600)').then(
    () => 'finished',
    (err: { code?: string }) => err.code ?? 'error',
  );
  return { pid, ended };
}

async function backendsOf(pids: number[]): Promise<number> {
  const rows = await adminQuery<{ n: number }>(
    'postgres',
    'SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1)',
    [pids],
  );
  return rows[0]!.n;
}

async function cannotLogIn(data: Credential): Promise<boolean> {
  try {
    const c = await loginAs(data);
    await c.end();
    return false;
  } catch {
    return true;
  }
}

async function leaseRow(broker: TestBroker, id: string) {
  const [row] = await adminQuery(
    new URL(broker.config.store.url).pathname.slice(1),
    'SELECT * FROM credbroker_leases WHERE id = $1',
    [id],
  );
  return row;
}

for (const admin of ['superuser', 'createrole'] as const) {
  describe(`revocation with a ${admin} admin`, () => {
    let broker: TestBroker;
    beforeAll(async () => {
      broker = await startBroker(admin);
    });

    it('ends a session holding a temp table and a session in another database within 2 s, and the role is gone', async () => {
      const { leaseId, data } = await issue(broker);
      const here = await parkedSession(data, target.database, ['CREATE TEMP TABLE keep(x int)']);
      const there = await parkedSession(data, otherDb);

      const started = Date.now();
      const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId });
      expect(res.status, JSON.stringify(res.body)).toBe(204);
      expect(
        await Promise.race([Promise.all([here.ended, there.ended]), sleep(2000).then(() => 'still running')]),
      ).toEqual(['57P01', '57P01']);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(await backendsOf([here.pid, there.pid])).toBe(0);
      expect(await cannotLogIn(data)).toBe(true);
      expect(await roleExists(data.username)).toBe(false);
      expect(await leaseRow(broker, leaseId)).toMatchObject({ state: 'revoked', last_error: null });
    });

    it('on expiry: VALID UNTIL only stops new logins, the reaper ends the open sessions too', async () => {
      const res = await api(broker, 'PUT', 'db/creds/reader', { ttl: '2s' });
      expect(res.status).toBe(200);
      const { lease_id: leaseId, data } = res.body as { lease_id: string; data: Credential };
      const session = await loginAs({ ...data, database: target.database });
      clients.push(session);
      session.on('error', () => undefined);
      await session.query('CREATE TEMP TABLE keep(x int)');
      await sleep(2600);
      // Past VALID UNTIL: a new login is refused, the open session still reads.
      expect(await cannotLogIn(data)).toBe(true);
      expect((await session.query('SELECT count(*)::int AS n FROM public.items')).rows[0].n).toBe(2);
      const parked = await parkedSession(data, otherDb).catch(() => null);
      expect(parked, 'a login after VALID UNTIL must fail').toBeNull();

      const ended = session.query('SELECT pg_sleep(600)').then(
        () => 'finished',
        (err: { code?: string }) => err.code,
      );
      const reaped = await broker.reaper.reapOnce();
      expect(reaped.revoked).toContain(leaseId);
      expect(await Promise.race([ended, sleep(2000).then(() => 'still running')])).toBe('57P01');
      expect(await roleExists(data.username)).toBe(false);
      expect(await leaseRow(broker, leaseId)).toMatchObject({ state: 'revoked', revoke_reason: 'expired' });
    });

    it('drops what the user owns in another database of the cluster, then the role', async () => {
      const { leaseId, data } = await issue(broker);
      const owner = await loginAs({ ...data, database: otherDb });
      const table = `stash_${randomName(6)}`;
      await owner.query(`CREATE TABLE public.${table} (secret text)`);
      await owner.end();
      const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId });
      expect(res.status, JSON.stringify(res.body)).toBe(204);
      expect(await roleExists(data.username)).toBe(false);
      expect(await adminQuery(otherDb, 'SELECT 1 FROM pg_class WHERE relname = $1', [table])).toHaveLength(0);
    });

    it('statements form: the operator statements run after the role is disabled and its sessions are gone', async () => {
      await adminQuery(
        target.database,
        `CREATE TABLE IF NOT EXISTS public.revocation_log (username text, could_login boolean, sessions int);
         GRANT INSERT ON public.revocation_log TO ${PREFIX}_admin;
         GRANT SELECT ON public.items TO ${PREFIX}_admin WITH GRANT OPTION;`,
      );
      const { leaseId, data } = await issue(broker, 'stmts');
      const session = await parkedSession(data, target.database, ['CREATE TEMP TABLE keep(x int)']);
      const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId });
      expect(res.status, JSON.stringify(res.body)).toBe(204);
      expect(await Promise.race([session.ended, sleep(2000).then(() => 'still running')])).toBe('57P01');
      expect(
        await adminQuery(
          target.database,
          'SELECT could_login, sessions FROM public.revocation_log WHERE username = $1',
          [data.username],
        ),
      ).toEqual([{ could_login: false, sessions: 0 }]);
      expect(await roleExists(data.username)).toBe(false);
    });
  });
}

describe('when cleanup cannot finish', () => {
  it('the role is left unable to log in and without a session, and the lease says why', async () => {
    const broker = await startBroker('createrole');
    const lockedDb = `t_locked_${randomName(8)}`;
    await adminQuery('postgres', `CREATE DATABASE ${lockedDb}`);
    await adminQuery(lockedDb, `GRANT CREATE ON SCHEMA public TO ${target.group}`);
    const { leaseId, data } = await issue(broker);
    const owner = await loginAs({ ...data, database: lockedDb });
    await owner.query('CREATE TABLE public.kept (x int)');
    await owner.end();
    // Nobody can connect to that database any more, the broker included.
    await adminQuery('postgres', `ALTER DATABASE ${lockedDb} ALLOW_CONNECTIONS false`);
    const session = await parkedSession(data, target.database);

    const res = await api(broker, 'PUT', 'sys/leases/revoke', { lease_id: leaseId });
    expect(res.status).toBe(502);
    expect(JSON.stringify(res.body)).toContain(lockedDb);
    expect(await Promise.race([session.ended, sleep(2000).then(() => 'still running')])).toBe('57P01');
    expect(await cannotLogIn(data)).toBe(true);
    const [role] = await adminQuery('postgres', 'SELECT rolcanlogin, rolvaliduntil FROM pg_roles WHERE rolname = $1', [
      data.username,
    ]);
    expect(role).toMatchObject({ rolcanlogin: false });
    expect(role.rolvaliduntil.getTime()).toBeLessThan(Date.now());
    const row = await leaseRow(broker, leaseId);
    expect(row.state).toBe('revoking');
    expect(row.last_error).toContain(lockedDb);
    const lookup = await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId });
    expect(lookup.body.data).toMatchObject({ state: 'revoking', credential_disabled: true });

    // Once the database is reachable again, the retry finishes the cleanup.
    await adminQuery('postgres', `ALTER DATABASE ${lockedDb} ALLOW_CONNECTIONS true`);
    await adminQuery(
      new URL(broker.config.store.url).pathname.slice(1),
      'UPDATE credbroker_leases SET next_attempt_at = now() WHERE id = $1',
      [leaseId],
    );
    expect((await broker.reaper.reapOnce()).revoked).toContain(leaseId);
    expect(await roleExists(data.username)).toBe(false);
    expect((await api(broker, 'PUT', 'sys/leases/lookup', { lease_id: leaseId })).body.data).toMatchObject({
      state: 'revoked',
      credential_disabled: false,
    });
  });
});

describe('privileges the admin login needs', () => {
  it('a mount whose admin cannot end sessions refuses to issue, naming the missing privilege and its GRANT', async () => {
    const broker = await startBroker('createrole', {
      mount: { connection_url: adminUrl(`${PREFIX}_weak`, target.database) },
    });
    const readerRoles = async () =>
      (
        await adminQuery('postgres', 'SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE $1', [
          `${PREFIX}\\_reader\\_%`,
        ])
      )[0].n as number;
    const before = await readerRoles();
    const res = await api(broker, 'PUT', 'db/creds/reader', {});
    expect(res.status).toBe(502);
    const message = String(res.body.errors[0]);
    expect(message).toContain('lacks pg_signal_backend');
    expect(message).toContain(`GRANT pg_signal_backend TO "${PREFIX}_weak"`);
    expect(await readerRoles()).toBe(before);

    const verify = await api(broker, 'GET', 'db/config/verify');
    expect(verify.status).toBe(200);
    expect(verify.body.data.ok).toBe(false);
    expect(verify.body.data.checks).toContainEqual(
      expect.objectContaining({ check: 'end sessions', ok: false, fix: `GRANT pg_signal_backend TO "${PREFIX}_weak"` }),
    );
    expect(verify.body.data.checks).toContainEqual(
      expect.objectContaining({ check: `group ${target.group}`, ok: true }),
    );

    // The fix takes effect without a restart.
    await adminQuery('postgres', `GRANT pg_signal_backend TO ${PREFIX}_weak`);
    await waitUntil(async () => (await api(broker, 'PUT', 'db/creds/reader', {})).status === 200, {
      timeoutMs: 10_000,
      intervalMs: 250,
      what: 'an issue to succeed once pg_signal_backend is granted',
    });
    expect((await api(broker, 'GET', 'db/config/verify')).body.data.ok).toBe(true);
  });

  it('verify names a missing group and a missing ADMIN OPTION', async () => {
    await adminQuery('postgres', `CREATE ROLE ${PREFIX}_other_group NOLOGIN`);
    const broker = await startTestBroker({
      storeDatabase: await freshStoreDatabase('rvkpow'),
      targetDatabase: target.database,
      prefix: PREFIX,
      mount: { connection_url: adminUrl(`${PREFIX}_admin`, target.database) },
      roles: { a: { member_of: [`${PREFIX}_other_group`] }, b: { member_of: [`${PREFIX}_nosuch`] } },
    });
    brokers.push(broker);
    const verify = await api(broker, 'GET', 'db/config/verify');
    expect(verify.body.data.checks).toContainEqual(
      expect.objectContaining({
        check: `group ${PREFIX}_other_group`,
        ok: false,
        fix: `GRANT "${PREFIX}_other_group" TO "${PREFIX}_admin" WITH ADMIN OPTION`,
      }),
    );
    expect(verify.body.data.checks).toContainEqual(
      expect.objectContaining({
        check: `group ${PREFIX}_nosuch`,
        ok: false,
        fix: `CREATE ROLE "${PREFIX}_nosuch" NOLOGIN`,
      }),
    );
    expect((await api(broker, 'GET', 'nosuchmount/config/verify')).status).toBe(404);
  });
});
