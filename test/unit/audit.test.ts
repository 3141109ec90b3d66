import { createHmac } from 'node:crypto';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AuditUnavailable, Auditor, auditConfigSchema, createAuditor } from '../../src/audit/auditor.js';
import { hmacField } from '../../src/audit/hmac.js';
import {
  MAX_DEPTH,
  MAX_RECORD_BYTES,
  TOO_DEEP,
  capRecord,
  scrubRecord,
  type AuditRecord,
} from '../../src/audit/record.js';
import type { AuditSink } from '../../src/audit/sinks.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';

const KEY = 'audit-hmac-key-for-unit-tests-0123456789';
const hmac = (value: string) => `hmac-sha256:${createHmac('sha256', KEY).update(value).digest('hex')}`;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function record(data: Record<string, unknown>, extra: Partial<AuditRecord> = {}): AuditRecord {
  return { type: 'response', time: '2025-01-02T03:04:05.000Z', request_id: 'req-1', data, ...extra };
}

/** A pino logger writing into an array, one parsed object per line. */
function capturingLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { log: createLogger('info', stream), lines };
}

class MemorySink implements AuditSink {
  readonly lines: AuditRecord[] = [];
  constructor(readonly name = 'memory') {}
  async write(line: AuditRecord) {
    this.lines.push(line);
  }
  async close() {}
}

class FailingSink implements AuditSink {
  constructor(readonly name = 'broken') {}
  async write(): Promise<void> {
    throw Object.assign(new Error('disk on fire'), { code: 'ENOSPC' });
  }
  async close() {}
}

describe('hmacField', () => {
  it('is Vault-shaped HMAC-SHA256, equal to node:crypto computed independently', () => {
    expect(hmacField(KEY, 'hunter2')).toBe(hmac('hunter2'));
    expect(hmacField(KEY, 'hunter2')).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
  });

  it('matches the RFC 4231 test vector', () => {
    expect(hmacField('Jefe', 'what do ya want for nothing?')).toBe(
      'hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });

  it('depends on the key', () => {
    expect(hmacField(`${KEY}x`, 'hunter2')).not.toBe(hmacField(KEY, 'hunter2'));
  });
});

describe('scrubRecord', () => {
  it('replaces each string of data by its HMAC, except non-secret fields, and leaves numbers as they were', () => {
    const out = scrubRecord(
      record({
        username: 'v-reader-abc',
        password: 'pw-1',
        access_key: 'AKIAEXAMPLE',
        secret_key: 'sk-1',
        session_token: 'st-1',
        ttl: 3600,
      }),
      KEY,
    );
    expect(out.data).toEqual({
      username: 'v-reader-abc',
      password: hmac('pw-1'),
      access_key: 'AKIAEXAMPLE',
      secret_key: hmac('sk-1'),
      session_token: hmac('st-1'),
      ttl: 3600,
    });
  });

  it('hashes every string at any depth, inside objects and arrays, unless its key is a known non-secret one', () => {
    const out = scrubRecord(
      record({
        auth: { client_token: 'ct-1', Token: 't-1', policies: ['root'], accessor: 'acc-1' },
        keys: [
          { name: 'a', PRIVATE_KEY: 'pk-1' },
          { name: 'b', nested: { secret_id: 'sid-1', api_key: 'ak-1', LeaseId: 'db/creds/r/x' } },
        ],
      }),
      KEY,
    );
    expect(out.data).toEqual({
      auth: { client_token: hmac('ct-1'), Token: hmac('t-1'), policies: ['root'], accessor: 'acc-1' },
      keys: [
        { name: hmac('a'), PRIVATE_KEY: hmac('pk-1') },
        { name: hmac('b'), nested: { secret_id: hmac('sid-1'), api_key: hmac('ak-1'), LeaseId: 'db/creds/r/x' } },
      ],
    });
  });

  it("keeps AWS's camel-case spelling of a non-secret key, and hashes its secrets", () => {
    const out = scrubRecord(record({ SecretAccessKey: 'sak-2', sessionToken: 'st-2', AccessKeyId: 'AKIA2' }), KEY);
    expect(out.data).toEqual({ SecretAccessKey: hmac('sak-2'), sessionToken: hmac('st-2'), AccessKeyId: 'AKIA2' });
  });

  it('hashes each string of an array; numbers, booleans and null stay', () => {
    const out = scrubRecord(
      record({ token: ['t-a', 't-b', 7], password: 12345, secret: { inner: 'x' }, jwt: null, renewable: true }),
      KEY,
    );
    expect(out.data).toEqual({
      token: [hmac('t-a'), hmac('t-b'), 7],
      password: 12345,
      secret: { inner: hmac('x') },
      jwt: null,
      renewable: true,
    });
  });

  it.each(['secret_id', 'api_key', 'passphrase', 'credentials', 'client_secret', 'role_id', 'private_token', 'x'])(
    'hashes a %s, which no list of secret names foresaw',
    (k) => {
      const out = scrubRecord(record({ [k]: 'plaintext-value-1', nested: { [k]: ['plaintext-value-2'] } }), KEY);
      expect(JSON.stringify(out)).not.toContain('plaintext-value');
    },
  );

  it('no string of a key outside the non-secret list reaches the record, whatever the keys and nesting (fuzzed)', () => {
    const nonSecret = new Set([
      'id',
      'leaseid',
      'requestid',
      'leaseduration',
      'renewable',
      'ttl',
      'increment',
      'role',
      'path',
      'prefix',
      'mount',
      'username',
      'accesskey',
      'accesskeyid',
      'accessor',
      'policies',
      'tokenpolicies',
      'warnings',
      'errors',
      'reason',
      'state',
      'issuetime',
      'expiretime',
      'lastrenewal',
      'issuedbefore',
    ]);
    const key = fc
      .string({ minLength: 1, maxLength: 12 })
      .filter((k) => !nonSecret.has(k.toLowerCase().replace(/[_-]/g, '')));
    const value = fc.string({ minLength: 16, maxLength: 40 });
    const tree = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small' },
        value,
        fc.array(tie('node'), { maxLength: 4 }),
        fc.dictionary(key, tie('node'), { maxKeys: 5 }),
      ),
    })).node;
    fc.assert(
      fc.property(fc.dictionary(key, tree, { maxKeys: 6 }), (data) => {
        const strings: string[] = [];
        const walk = (v: unknown): void => {
          if (typeof v === 'string') strings.push(v);
          else if (v && typeof v === 'object') Object.values(v).forEach(walk);
        };
        walk(data);
        const line = JSON.stringify(scrubRecord(record(data as Record<string, unknown>), KEY));
        for (const s of strings) expect(line).not.toContain(JSON.stringify(s).slice(1, -1));
      }),
      { numRuns: 300 },
    );
  });

  it('a body nested 5,000 deep is scrubbed without overflowing the stack, cut at MAX_DEPTH with a marker', () => {
    let deep: Record<string, unknown> = { password: 'deep-secret-value' };
    for (let i = 0; i < 5000; i++) deep = { a: deep };
    const nested = [] as unknown[];
    let cursor = nested;
    for (let i = 0; i < 100_000; i++) cursor.push((cursor = []));
    const out = scrubRecord(record({ deep, nested }), KEY);
    const line = JSON.stringify(out);
    expect(line).not.toContain('deep-secret-value');
    expect(line).toContain(TOO_DEEP);
    let depth = 0;
    for (let v: any = out.data!.deep; v && typeof v === 'object'; v = v.a) depth++;
    expect(depth).toBeLessThanOrEqual(MAX_DEPTH);
  });

  it('leaves the fields outside data alone', () => {
    const input = record(
      { password: 'pw' },
      {
        identity: { name: 'root', auth_mount: 'token', accessor: 'acc-1', metadata: { team: 'ops' }, root: true },
        remote_address: '10.0.0.1',
        operation: 'update',
        path: 'db/creds/reader',
        lease_id: 'db/creds/reader/abc',
        outcome: 'ok',
        status: 200,
      },
    );
    const { data, ...rest } = scrubRecord(input, KEY);
    const { data: _, ...expected } = input;
    expect(rest).toEqual(expected);
  });

  it('redacts a secret of data that the error text quotes', () => {
    const out = scrubRecord(
      record({ password: 'pw-in-error' }, { error: "CREATE ROLE failed near 'pw-in-error'" }),
      KEY,
    );
    expect(out.error).not.toContain('pw-in-error');
    expect(out.error).toContain('CREATE ROLE failed');
  });

  it('never mutates its input and shares no object with it', () => {
    const input = deepFreeze(
      record(
        { password: 'pw', nested: { token: ['t'], keep: { a: 1 } } },
        { identity: { name: 'n', auth_mount: 'token', metadata: { k: 'v' } } },
      ),
    );
    const before = structuredClone(input);
    const out = scrubRecord(input, KEY);
    expect(input).toEqual(before);
    expect(out.data).not.toBe(input.data);
    expect((out.data as any).nested.keep).not.toBe((input.data as any).nested.keep);
    expect(out.identity).not.toBe(input.identity);
    expect(out.identity!.metadata).not.toBe(input.identity!.metadata);
  });
});

describe('capRecord', () => {
  const size = (r: AuditRecord) => Buffer.byteLength(JSON.stringify(r));

  it('leaves a record under the cap as it is', () => {
    const r = record({ password: hmac('x') });
    expect(capRecord(r)).toBe(r);
  });

  it('drops a data field that would take the record over the cap, and says how big it was', () => {
    const out = capRecord(record({ junk: 'x'.repeat(63_000) }));
    expect(size(out)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(out.data).toBeUndefined();
    expect(out.truncated!.data_bytes).toBeGreaterThan(63_000);
    expect(out.request_id).toBe('req-1');
  });

  it('cuts long strings outside data too (a 60 KB path, a huge claim in the metadata), naming them', () => {
    const out = capRecord(
      record(
        {},
        {
          path: 'p'.repeat(60_000),
          identity: { name: 'n'.repeat(30_000), auth_mount: 'k8s', metadata: { ns: 'm'.repeat(30_000) } },
        },
      ),
    );
    expect(size(out)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
    expect(out.truncated!.fields).toEqual(expect.arrayContaining(['path', 'identity.name', 'identity.metadata']));
    expect(out.path).toMatch(/^p+…\[truncated\]$/);
  });

  it('every record the Auditor hands a sink fits the cap, whatever the sizes (fuzzed)', async () => {
    const sink = new MemorySink();
    const auditor = new Auditor([sink], KEY, capturingLogger().log);
    await fc.assert(
      fc.asyncProperty(fc.nat(70_000), fc.nat(70_000), fc.nat(20_000), async (dataLen, pathLen, nameLen) => {
        await auditor.record(
          record(
            { body: 'b'.repeat(dataLen) },
            { path: 'p'.repeat(pathLen), identity: { name: 'n'.repeat(nameLen), auth_mount: 'token' } },
          ),
        );
        expect(size(sink.lines.at(-1)!)).toBeLessThanOrEqual(MAX_RECORD_BYTES);
      }),
      { numRuns: 50 },
    );
  });
});

describe('auditConfigSchema', () => {
  const key = 'k'.repeat(32);

  it('accepts each sink alone and all together', () => {
    expect(auditConfigSchema.parse({ hmac_key: key, stdout: true })).toEqual({
      hmac_key: key,
      stdout: true,
      retention: 90 * 86400,
    });
    expect(auditConfigSchema.safeParse({ hmac_key: key, postgres: true }).success).toBe(true);
    expect(
      auditConfigSchema.safeParse({
        hmac_key: key,
        file: { path: '/var/log/credbroker/audit.log' },
        stdout: true,
        postgres: true,
      }).success,
    ).toBe(true);
  });

  it('refuses a config with no sink switched on', () => {
    const result = auditConfigSchema.safeParse({ hmac_key: key, stdout: false, postgres: false });
    expect(result.success).toBe(false);
    expect(result.error!.issues[0]!.message).toMatch(/at least one sink/);
  });

  it('refuses a short hmac_key and unknown keys', () => {
    expect(auditConfigSchema.safeParse({ hmac_key: 'k'.repeat(31), stdout: true }).success).toBe(false);
    expect(auditConfigSchema.safeParse({ hmac_key: key, stdout: true, syslog: true }).success).toBe(false);
    expect(auditConfigSchema.safeParse({ hmac_key: key, file: { path: '/x', mode: '0644' } }).success).toBe(false);
  });
});

describe('Auditor', () => {
  it('counts a sink that hangs as failed after its deadline: a hung sink must not hang requests', async () => {
    const hung: AuditSink = { name: 'hung', write: () => new Promise(() => undefined), close: async () => undefined };
    const started = Date.now();
    await expect(new Auditor([hung], KEY, capturingLogger().log, 50).record(record({}))).rejects.toBeInstanceOf(
      AuditUnavailable,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('hands every sink the scrubbed record', async () => {
    const a = new MemorySink('a');
    const b = new MemorySink('b');
    await new Auditor([a, b], KEY, capturingLogger().log).record(record({ password: 'pw' }));
    expect(a.lines).toEqual([record({ password: hmac('pw') })]);
    expect(b.lines).toEqual(a.lines);
  });

  it('refuses with AuditUnavailable when every sink fails, and logs each by name and code without the record', async () => {
    const { log, lines } = capturingLogger();
    const auditor = new Auditor([new FailingSink('one'), new FailingSink('two')], KEY, log);
    const err = await auditor
      .record(record({ password: 'pw-never-logged' }, { path: 'db/creds/secret-path' }))
      .catch((e) => e);
    expect(err).toBeInstanceOf(AuditUnavailable);
    expect(err.code).toBe('ERR_AUDIT_UNAVAILABLE');
    expect(err.message).toBe('audit log unavailable: request refused');
    const logged = lines.map((l) => JSON.parse(l));
    expect(logged.map((l) => [l.sink, l.code])).toEqual([
      ['one', 'ENOSPC'],
      ['two', 'ENOSPC'],
    ]);
    expect(lines.join('')).not.toMatch(/pw-never-logged|secret-path|disk on fire/);
  });

  it('accepts a record that one sink of two took', async () => {
    const good = new MemorySink();
    await new Auditor([new FailingSink(), good], KEY, capturingLogger().log).record(record({}));
    expect(good.lines).toHaveLength(1);
  });

  it('records nothing and refuses nothing with no sinks', async () => {
    await expect(
      createAuditor(undefined, { storePool: {} as never, log: capturingLogger().log }).record(record({})),
    ).resolves.toBeUndefined();
  });

  it('event() stamps type and time and never throws', async () => {
    const sink = new MemorySink();
    await new Auditor([sink], KEY, capturingLogger().log).event({
      request_id: 'reaper',
      operation: 'revoked',
      lease_id: 'db/creds/r/x',
    });
    expect(sink.lines[0]).toMatchObject({
      type: 'event',
      request_id: 'reaper',
      operation: 'revoked',
      lease_id: 'db/creds/r/x',
    });
    expect(new Date(sink.lines[0]!.time).toISOString()).toBe(sink.lines[0]!.time);

    const { log, lines } = capturingLogger();
    await expect(
      new Auditor([new FailingSink()], KEY, log).event({ request_id: 'reaper', operation: 'revoke-failed' }),
    ).resolves.toBeUndefined();
    expect(lines.some((l) => JSON.parse(l).msg === 'audit event not recorded')).toBe(true);
  });

  it('hash() is hmacField with the configured key, and refuses when audit is not configured', () => {
    expect(new Auditor([], KEY, capturingLogger().log).hash('pw')).toBe(hmac('pw'));
    expect(() => createAuditor(undefined, { storePool: {} as never, log: capturingLogger().log }).hash('pw')).toThrow(
      ConfigError,
    );
  });
});
