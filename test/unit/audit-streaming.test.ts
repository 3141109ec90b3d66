import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { auditConfigSchema } from '../../src/audit/auditor.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { formatSyslog, octetCounted } from '../../src/audit/sinks/syslog-format.js';

const KEY = 'audit-hmac-key-for-unit-tests-0123456789';

const record = (data: Record<string, unknown>, extra: Partial<AuditRecord> = {}): AuditRecord => ({
  type: 'response',
  time: '2026-12-02T04:00:00.000Z',
  request_id: 'r1',
  outcome: 'ok',
  data,
  ...extra,
});

/** Splits an RFC 5424 message into its six header fields, structured data and MSG. */
const RFC5424 = /^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) - (.*)$/s;

describe('RFC 5424 formatting', () => {
  it('any record text, in any script, frames with its byte length and comes back whole as MSG', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.string(), (note, appName) => {
        const r = record({ note });
        const framed = octetCounted(formatSyslog(r, { facility: 'local0', appName }));
        const space = framed.indexOf(0x20);
        const length = Number(framed.subarray(0, space).toString('ascii'));
        expect(length).toBe(framed.length - space - 1);
        const m = RFC5424.exec(framed.subarray(space + 1).toString('utf8'));
        expect(m).not.toBeNull();
        expect(JSON.parse(m![7]!)).toEqual(r);
        // A header field is printable ASCII without spaces, or the NILVALUE.
        expect(m![4]).toMatch(/^[\x21-\x7e]{1,48}$/);
      }),
    );
  });

  it('PRI is facility * 8 + severity: info for ok, notice for denied, warning for error', () => {
    const pri = (outcome: AuditRecord['outcome'], facility: 'auth' | 'local7') =>
      Number(/^<(\d+)>/.exec(formatSyslog(record({}, { outcome }), { facility, appName: 'a' }))![1]);
    expect(pri('ok', 'auth')).toBe(38);
    expect(pri('denied', 'auth')).toBe(37);
    expect(pri('error', 'local7')).toBe(23 * 8 + 4);
  });

  it('the record type is the MSGID and the record time the TIMESTAMP', () => {
    const m = RFC5424.exec(formatSyslog(record({}, { type: 'event' }), { facility: 'auth', appName: 'credbroker' }))!;
    expect(m[2]).toBe('2026-12-02T04:00:00.000Z');
    expect(m[4]).toBe('credbroker');
    expect(m[6]).toBe('event');
  });
});

describe('streaming sink config', () => {
  const parse = (audit: Record<string, unknown>) => auditConfigSchema.parse({ hmac_key: KEY, ...audit });

  it('one syslog receiver with its defaults, or a list', () => {
    expect(parse({ syslog: { address: 'logs.internal:514' } }).syslog).toEqual([
      {
        address: { host: 'logs.internal', port: 514 },
        protocol: 'tcp',
        facility: 'auth',
        app_name: 'credbroker',
        timeout: 2000,
        buffer: 10_000,
      },
    ]);
    const two = parse({ syslog: [{ address: '[::1]:6514' }, { address: '10.0.0.5:514', protocol: 'udp' }] }).syslog!;
    expect(two.map((s) => [s.address.host, s.address.port, s.protocol])).toEqual([
      ['::1', 6514, 'tcp'],
      ['10.0.0.5', 514, 'udp'],
    ]);
  });

  it('a webhook with its defaults; durations in seconds or with a unit, to milliseconds', () => {
    expect(parse({ webhook: { url: 'https://hec.example:8088/x' } }).webhook).toEqual([
      { url: 'https://hec.example:8088/x', batch_size: 100, flush_interval: 1000, timeout: 5000, buffer: 10_000 },
    ]);
    const w = parse({ webhook: { url: 'http://v/x', flush_interval: '250ms', timeout: 3 } }).webhook![0]!;
    expect([w.flush_interval, w.timeout]).toEqual([250, 3000]);
  });

  it('a streaming sink alone is enough; bad addresses, protocols, facilities, URLs and durations are refused', () => {
    expect(() => parse({ webhook: { url: 'http://v/x' } })).not.toThrow();
    for (const bad of [
      { syslog: { address: 'no-port' } },
      { syslog: { address: 'h:99999' } },
      { syslog: { address: 'h:514', protocol: 'tls' } },
      { syslog: { address: 'h:514', facility: 'local9' } },
      { syslog: { address: 'h:514', timeout: '0ms' } },
      { syslog: { address: 'h:514', timeout: 'soon' } },
      { syslog: { address: 'h:514', buffer: 0 } },
      { syslog: [] },
      { syslog: { address: 'h:514', protocol: 'udp', tls: {} } },
      { syslog: { address: 'h:514', tls: { cert_file: '/c.pem' } } },
      { webhook: { url: 'ftp://v/x' } },
      { webhook: { url: 'http://v/x', batch_size: 0 } },
      { webhook: { url: 'http://v/x', headers: { authorization: 1 } } },
      { webhook: { url: 'http://v/x', surprise: true } },
    ])
      expect(() => parse(bad), JSON.stringify(bad)).toThrow();
  });
});
