import { describe, expect, it } from 'vitest';
import { auditFieldsFor, DEFAULT_AUDIT_FIELDS, scrubRecord } from '../../src/audit/record.js';
import { hmacField } from '../../src/audit/hmac.js';
import type { EngineRegistry } from '../../src/engines.js';

const KEY = 'k'.repeat(32);

describe('the audit of response wrapping', () => {
  it('hashes wrap_info.token and keeps its metadata plain, so an operator can find the wrap', () => {
    const record = scrubRecord(
      {
        type: 'response',
        time: new Date().toISOString(),
        request_id: 'r',
        data: {
          wrap_info: {
            token: 'cbw.secret-wrapping-token',
            accessor: 'acc',
            ttl: 60,
            creation_time: '2026-12-02T00:00:00.000Z',
            creation_path: 'db/creds/reader',
            wrapped_accessor: 'tokacc',
          },
        },
      },
      KEY,
    );
    expect(record.data).toEqual({
      wrap_info: {
        token: hmacField(KEY, 'cbw.secret-wrapping-token'),
        accessor: 'acc',
        ttl: 60,
        creation_time: '2026-12-02T00:00:00.000Z',
        creation_path: 'db/creds/reader',
        wrapped_accessor: 'tokacc',
      },
    });
  });

  it('hashes `token` and `client_token` even where an engine declares them plain', () => {
    const careless = {
      kv: { secrets: { credential: [], mount: {}, plain: ['token', 'client_token', 'username'] } },
    } as unknown as EngineRegistry;
    const fields = auditFieldsFor(careless);
    expect(fields.isPlain('token')).toBe(false);
    expect(fields.isPlain('client_token')).toBe(false);
    expect(fields.isPlain('username')).toBe(true);
    expect(DEFAULT_AUDIT_FIELDS.isPlain('token')).toBe(false);
  });
});
