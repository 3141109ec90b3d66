import { describe, expect, it } from 'vitest';
import { pgTimestamp, renderStatement } from '../../engines/postgres/statements.js';
import { makeUsername } from '../../engines/postgres/target.js';
import { InvalidRequest } from '../../src/errors.js';
import { sanitizeError } from '../../src/leases/guarded-target.js';
import { isLeaseIdShape, newLeaseId, validatePrefix } from '../../src/leases/lease-id.js';
import { prefixUpperBound } from '../../src/leases/sql/prefix-range.js';

describe('makeUsername', () => {
  const longPrefix = 'p'.repeat(16); // the longest username_prefix the schema allows
  const longRole = 'r'.repeat(32); // the longest role name the schema allows

  it('stays within PostgreSQL’s 63-byte identifier limit for the longest prefix and role name', () => {
    const name = makeUsername(longPrefix, longRole);
    expect(Buffer.byteLength(name, 'utf8')).toBeLessThanOrEqual(63);
    expect(name.startsWith(`${longPrefix}_rrrr`)).toBe(true);
  });

  it('keeps the whole role name when it fits', () => {
    expect(makeUsername('cb', 'readonly')).toMatch(/^cb_readonly_[a-z0-9]{16}$/);
  });

  it('uses only lower-case letters, digits and "_", even for a role name with "-"', () => {
    for (let i = 0; i < 100; i++) expect(makeUsername('cb', 'etl-reader_2')).toMatch(/^[a-z0-9_]+$/);
    expect(makeUsername('cb', 'etl-reader_2')).toMatch(/^cb_etl_reader_2_/);
  });

  it('never repeats over 10,000 names for the same role', () => {
    const names = new Set<string>();
    let longest = 0;
    for (let i = 0; i < 10_000; i++) {
      const name = makeUsername(longPrefix, longRole);
      longest = Math.max(longest, name.length);
      names.add(name);
    }
    expect(names.size).toBe(10_000);
    expect(longest).toBeLessThanOrEqual(63);
  });
});

describe('renderStatement', () => {
  const values = {
    name: 'cb_reader_abc',
    password: 'SCRAM-SHA-256$16:c2FsdA==$a:b',
    expiration: '2030-01-02 03:04:05+00',
  };

  it('fills {{name}}, {{password}} and {{expiration}}, with or without inner spaces', () => {
    const sql = renderStatement(
      `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{ password }}' VALID UNTIL '{{expiration}}';`,
      values,
    );
    expect(sql).toBe(
      `CREATE ROLE "cb_reader_abc" WITH LOGIN PASSWORD 'SCRAM-SHA-256$16:c2FsdA==$a:b' VALID UNTIL '2030-01-02 03:04:05+00';`,
    );
  });

  it('fills every occurrence and accepts {{username}} as Vault does', () => {
    expect(renderStatement('GRANT r TO "{{name}}"; ALTER ROLE "{{username}}" SET x = 1', values)).toBe(
      'GRANT r TO "cb_reader_abc"; ALTER ROLE "cb_reader_abc" SET x = 1',
    );
  });

  it('leaves unknown placeholders alone', () => {
    expect(renderStatement('SELECT {{other}}', values)).toBe('SELECT {{other}}');
  });

  it('refuses a placeholder whose value is not available (no password when renewing)', () => {
    expect(() => renderStatement(`ALTER ROLE "{{name}}" PASSWORD '{{password}}'`, { name: 'u' })).toThrow(
      'statement uses {{password}}, which is not available here',
    );
  });
});

describe('pgTimestamp', () => {
  it('writes a UTC timestamptz literal to the second', () => {
    expect(pgTimestamp(new Date('2024-03-05T06:07:08.123Z'))).toBe('2024-03-05 06:07:08+00');
    expect(pgTimestamp(new Date(Date.UTC(2031, 11, 31, 23, 59, 59)))).toBe('2031-12-31 23:59:59+00');
  });
});

describe('prefixUpperBound', () => {
  it('is the prefix with its last character incremented', () => {
    expect(prefixUpperBound('db/creds/reader/')).toBe('db/creds/reader0');
    expect(prefixUpperBound('abc')).toBe('abd');
    expect(prefixUpperBound('a')).toBe('b');
  });

  it('bounds exactly the ids that start with the prefix (byte order, as in the "C" collation)', () => {
    const prefix = 'db/creds/reader/';
    const upper = prefixUpperBound(prefix);
    const inRange = (id: string) => id >= prefix && id < upper;
    expect(inRange('db/creds/reader/')).toBe(true);
    expect(inRange('db/creds/reader/zzzzzzzzzzzzzzzzzzzzzzzz')).toBe(true);
    expect(inRange('db/creds/reader/ZZZ')).toBe(true);
    expect(inRange('db/creds/reader0')).toBe(false);
    expect(inRange('db/creds/reader2/abc')).toBe(false);
    expect(inRange('db/creds/reade/abc')).toBe(false);
  });

  it('puts every string above the empty prefix', () => {
    expect(prefixUpperBound('') > 'zzzz').toBe(true);
  });
});

describe('validatePrefix', () => {
  it.each([
    '',
    'db',
    'db/',
    'db/creds/reader',
    'db/creds/reader/',
    'db/creds/reader/AbC123xyz',
    'my-mount/creds/etl_reader/',
  ])('accepts %j', (prefix) => {
    expect(validatePrefix(prefix)).toBe(prefix);
  });

  it.each([
    ['a dot-dot segment', 'db/../sys'],
    ['a bare dot-dot', '..'],
    ['a single quote', "db/creds/x'; DROP TABLE credbroker_leases; --"],
    ['a double quote', 'db/"x"'],
    ['a semicolon', 'db;creds'],
    ['a percent sign', 'db/%2e%2e'],
    ['a space', 'db/creds reader'],
    ['an empty middle segment', 'db//reader'],
    ['two empty middle segments', 'db/creds///x'],
    ['a backslash', 'db\\creds'],
    ['a non-ASCII letter', 'dé/creds'],
    ['more than 200 characters', 'a'.repeat(201)],
  ])('rejects %s', (_label, prefix) => {
    expect(() => validatePrefix(prefix)).toThrow(InvalidRequest);
  });
});

describe('lease ids', () => {
  it("have Vault's <mount>/creds/<role>/<24 base62> shape", () => {
    const id = newLeaseId('db', 'creds', 'reader');
    expect(id).toMatch(/^db\/creds\/reader\/[A-Za-z0-9]{24}$/);
    expect(isLeaseIdShape(id)).toBe(true);
    expect(isLeaseIdShape('db/creds/reader/')).toBe(false);
    expect(isLeaseIdShape('db/creds/reader/abc/def')).toBe(false);
  });
});

describe('sanitizeError', () => {
  it('replaces every registered secret, wherever and however often it appears', () => {
    const secret = 'Pa55w0rd-Z9qQ';
    const verifier = 'SCRAM-SHA-256$16:salt$stored:server';
    const out = sanitizeError(`role "u" password "${secret}" (again: ${secret}) verifier ${verifier}`, [
      secret,
      verifier,
    ]);
    expect(out).toBe('role "u" password "[redacted]" (again: [redacted]) verifier [redacted]');
  });

  it('ignores empty secrets instead of mangling the text', () => {
    expect(sanitizeError('plain message', ['', 'absent'])).toBe('plain message');
  });

  it('replaces control characters but keeps tabs and newlines', () => {
    expect(sanitizeError('a\u0000b\u001bc\u007fd\te\nf')).toBe('a b c d\te\nf');
  });

  it('truncates to 500 characters, ending with an ellipsis', () => {
    const out = sanitizeError('x'.repeat(2000));
    expect(out).toHaveLength(500);
    expect(out.endsWith('…')).toBe(true);
    expect(sanitizeError('y'.repeat(500))).toBe('y'.repeat(500));
  });

  it('redacts before truncating, so no piece of a secret survives at the cut', () => {
    const secret = 'SECRETVALUE-abcdefghijklmnopqrstuvwxyz0123456789';
    const out = sanitizeError(`${'x'.repeat(495)}${secret}`, [secret]);
    expect(out).toHaveLength(500);
    expect(out).not.toContain(secret.slice(0, 4));
    expect(out).toBe(`${'x'.repeat(495)}[red…`);
  });
});
