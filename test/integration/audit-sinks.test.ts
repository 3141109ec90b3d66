import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { AuditUnavailable, Auditor } from '../../src/audit/auditor.js';
import { hmacField } from '../../src/audit/hmac.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { FileSink, PostgresSink, StdoutSink } from '../../src/audit/sinks.js';
import { createLogger } from '../../src/log.js';
import { randomSecret } from '../../src/random.js';
import { adminQuery, freshStoreDatabase, pgUrl } from '../support/pg.js';

const KEY = randomSecret();
const dir = mkdtempSync(join(tmpdir(), 'credbroker-audit-test-'));
let storeDb: string;
let pool: pg.Pool;

beforeAll(async () => {
  storeDb = await freshStoreDatabase('audit');
  pool = new pg.Pool({ connectionString: pgUrl(storeDb), max: 4 });
});

afterAll(async () => {
  await pool?.end();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  vi.restoreAllMocks();
});

const logs: string[] = [];
const log = createLogger(
  'info',
  new Writable({
    write(chunk, _enc, done) {
      logs.push(String(chunk));
      done();
    },
  }),
);

/** Lines written to process.stdout until the spy is restored; each write is acknowledged, as the real stream does. */
function captureStdout(): string[] {
  const written: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: unknown, encodingOrDone?: unknown, done?: unknown) => {
    written.push(String(chunk));
    const callback = typeof encodingOrDone === 'function' ? encodingOrDone : done;
    if (typeof callback === 'function') queueMicrotask(() => callback());
    return true;
  }) as typeof process.stdout.write);
  return written;
}

function auditRecord(requestId: string, data: Record<string, unknown> = {}): AuditRecord {
  return {
    type: 'response',
    time: new Date().toISOString(),
    request_id: requestId,
    identity: { name: 'ci-deployer', auth_mount: 'token' },
    operation: 'update',
    path: 'aws/creds/deploy',
    lease_id: `aws/creds/deploy/${requestId}`,
    outcome: 'ok',
    status: 200,
    data,
  };
}

const fileText = (path: string) => readFileSync(path, 'utf8');

/** Rows of the audit table whose whole text contains `needle`. */
async function tableRowsContaining(needle: string): Promise<number> {
  const rows = await adminQuery<{ n: number }>(
    storeDb,
    `SELECT count(*)::int AS n FROM credbroker_audit a WHERE a::text LIKE '%' || $1 || '%'`,
    [needle],
  );
  return rows[0]!.n;
}

describe('audit sinks', () => {
  it('a password, secret key, session token and client token reach the file, stdout and the table only as HMACs', async () => {
    const secrets = {
      password: `pw-${randomSecret()}`,
      secret_key: `sk-${randomSecret()}`,
      session_token: `st-${randomSecret()}`,
      client_token: `ct-${randomSecret()}`,
    };
    const path = join(dir, 'grep.log');
    const stdout = captureStdout();
    const auditor = new Auditor([new FileSink(path), new StdoutSink(), new PostgresSink(pool)], KEY, log);
    await auditor.record(
      auditRecord('grep', {
        access_key: 'AKIAEXAMPLEKEY',
        secret_key: secrets.secret_key,
        session_token: secrets.session_token,
        credentials: [{ username: 'v-ci', password: secrets.password }],
        auth: { client_token: secrets.client_token },
      }),
    );
    vi.restoreAllMocks();
    await auditor.close();

    const file = fileText(path);
    const printed = stdout.join('');
    expect(file.split('\n').filter(Boolean)).toHaveLength(1);
    expect(JSON.parse(printed)).toEqual(JSON.parse(file));
    for (const [name, plain] of Object.entries(secrets)) {
      const hashed = hmacField(KEY, plain);
      expect(file, `${name} in the file`).not.toContain(plain);
      expect(printed, `${name} on stdout`).not.toContain(plain);
      expect(await tableRowsContaining(plain), `${name} in the table`).toBe(0);
      expect(file, `hashed ${name} in the file`).toContain(hashed);
      expect(printed, `hashed ${name} on stdout`).toContain(hashed);
      expect(await tableRowsContaining(hashed), `hashed ${name} in the table`).toBe(1);
    }
    expect(file).toContain('AKIAEXAMPLEKEY');
  });

  it('the table row keeps every field, with identity and data as jsonb', async () => {
    await new Auditor([new PostgresSink(pool)], KEY, log).record({
      ...auditRecord('row', { ttl: 900 }),
      remote_address: '10.1.2.3',
      error: 'none',
    });
    const rows = await adminQuery(storeDb, `SELECT * FROM credbroker_audit WHERE request_id = 'row'`);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      type: 'response',
      identity: { name: 'ci-deployer', auth_mount: 'token' },
      remote_address: '10.1.2.3',
      operation: 'update',
      path: 'aws/creds/deploy',
      lease_id: 'aws/creds/deploy/row',
      outcome: 'ok',
      status: 200,
      error: 'none',
      data: { ttl: 900 },
    });
    expect(rows[0].time).toBeInstanceOf(Date);
    const byName = await adminQuery(
      storeDb,
      `SELECT count(*)::int AS n FROM credbroker_audit WHERE identity->>'name' = 'ci-deployer'`,
    );
    expect(byName[0].n).toBeGreaterThanOrEqual(1);
  });

  it('the file sink creates its file with mode 0600 and appends to one that exists', async () => {
    const path = join(dir, 'mode.log');
    const first = new FileSink(path);
    await first.write(auditRecord('m1'));
    await first.close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const second = new FileSink(path);
    await second.write(auditRecord('m2'));
    await second.close();
    expect(
      fileText(path)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).request_id),
    ).toEqual(['m1', 'm2']);
  });

  it('concurrent writes of lines larger than one write() chunk never interleave', async () => {
    const path = join(dir, 'concurrent.log');
    const sink = new FileSink(path);
    // Node writes a file in 512 KiB chunks: a longer line takes several write() calls, so two
    // unserialized appends could splice their chunks together.
    const note = (i: number) => String.fromCharCode(97 + (i % 26)).repeat(1_200_000);
    await Promise.all(Array.from({ length: 12 }, (_, i) => sink.write(auditRecord(`c${i}`, { note: note(i) }))));
    await sink.close();
    const lines = fileText(path)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.request_id).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `c${i}`).sort());
    for (const line of lines) expect(line.data.note).toBe(note(Number(line.request_id.slice(1))));
  });

  it('concurrent first writes open the file once, and close leaves no descriptor open on it', async () => {
    const path = join(dir, 'once.log');
    const openOnPath = () =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === path;
        } catch {
          return false;
        }
      }).length;
    const sink = new FileSink(path);
    await Promise.all(Array.from({ length: 20 }, (_, i) => sink.write(auditRecord(`o${i}`))));
    expect(openOnPath()).toBe(1);
    await sink.close();
    expect(openOnPath()).toBe(0);
  });

  it('reopen after the file was renamed writes to a new file at the path', async () => {
    const path = join(dir, 'rotate.log');
    const sink = new FileSink(path);
    const auditor = new Auditor([sink], KEY, log);
    await auditor.record(auditRecord('before'));
    renameSync(path, `${path}.1`);
    await auditor.record(auditRecord('still-old'));
    await auditor.reopen();
    await auditor.record(auditRecord('after'));
    await auditor.close();
    const ids = (p: string) =>
      fileText(p)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).request_id);
    expect(ids(`${path}.1`)).toEqual(['before', 'still-old']);
    expect(ids(path)).toEqual(['after']);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('with the only sink under a directory that does not exist, record() rejects with AuditUnavailable', async () => {
    logs.length = 0;
    const auditor = new Auditor([new FileSink(join(dir, 'missing', 'audit.log'))], KEY, log);
    await expect(auditor.record(auditRecord('nodir', { password: 'pw-not-logged' }))).rejects.toBeInstanceOf(
      AuditUnavailable,
    );
    expect(logs.map((l) => JSON.parse(l)).map((l) => l.code)).toEqual(['ENOENT']);
    expect(logs.join('')).not.toContain('pw-not-logged');
  });

  it('with the only sink a path that is a directory, record() rejects with AuditUnavailable', async () => {
    const path = join(dir, 'a-directory');
    mkdirSync(path);
    await expect(new Auditor([new FileSink(path)], KEY, log).record(auditRecord('isdir'))).rejects.toBeInstanceOf(
      AuditUnavailable,
    );
  });

  it('a file sink that failed recovers once its directory exists', async () => {
    const path = join(dir, 'later', 'audit.log');
    const sink = new FileSink(path);
    await expect(sink.write(auditRecord('early'))).rejects.toMatchObject({ code: 'ENOENT' });
    mkdirSync(join(dir, 'later'));
    await sink.write(auditRecord('late'));
    await sink.close();
    expect(JSON.parse(fileText(path)).request_id).toBe('late');
  });

  it('with one failing and one working sink, record() resolves and the working one has the record', async () => {
    logs.length = 0;
    const failing = new FileSink(join(dir, 'missing', 'audit.log'));
    const auditor = new Auditor([failing, new PostgresSink(pool)], KEY, log);
    await expect(auditor.record(auditRecord('half'))).resolves.toBeUndefined();
    expect(await adminQuery(storeDb, `SELECT 1 FROM credbroker_audit WHERE request_id = 'half'`)).toHaveLength(1);
    expect(logs.map((l) => JSON.parse(l)).map((l) => [l.sink, l.code])).toEqual([[failing.name, 'ENOENT']]);
  });

  it('a postgres sink whose pool is gone fails the record when it is the only sink', async () => {
    const gone = new pg.Pool({ connectionString: pgUrl(storeDb), max: 1 });
    await gone.end();
    await expect(new Auditor([new PostgresSink(gone)], KEY, log).record(auditRecord('nopool'))).rejects.toBeInstanceOf(
      AuditUnavailable,
    );
  });

  it('a closed file sink refuses writes', async () => {
    const sink = new FileSink(join(dir, 'closed.log'));
    await sink.close();
    await expect(sink.write(auditRecord('too-late'))).rejects.toThrow(/closed/);
  });
});
