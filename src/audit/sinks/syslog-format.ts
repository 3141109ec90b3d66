import { hostname } from 'node:os';
import type { AuditRecord } from '../record.js';

/** RFC 5424 §6.2.1 facility numbers, by the names rsyslog and syslog.conf use. */
export const FACILITIES = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  ntp: 12,
  audit: 13,
  alert: 14,
  clock: 15,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;

export type Facility = keyof typeof FACILITIES;

/** A denied request is a notice, a failed one a warning, anything else informational. */
const severityOf = (record: AuditRecord): number =>
  record.outcome === 'denied' ? 5 : record.outcome === 'error' ? 4 : 6;

/** RFC 5424 header fields are PRINTUSASCII (33..126) with a maximum length, or the NILVALUE "-". */
const headerField = (value: string, max: number): string => {
  const printable = value.replace(/[^\x21-\x7e]/g, '').slice(0, max);
  return printable || '-';
};

export interface SyslogHeader {
  facility: Facility;
  appName: string;
  hostname?: string;
  procId?: string;
}

/**
 * One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, with the record's
 * type as MSGID, no structured data, and the record's JSON as MSG (UTF-8, no BOM).
 * @example formatSyslog(record, { facility: 'auth', appName: 'credbroker' })
 * // '<38>1 2026-12-02T04:00:00.000Z host credbroker 4242 response - {"type":"response",…}'
 */
export function formatSyslog(record: AuditRecord, header: SyslogHeader): string {
  const pri = FACILITIES[header.facility] * 8 + severityOf(record);
  return [
    `<${pri}>1`,
    headerField(record.time, 64),
    headerField(header.hostname ?? hostname(), 255),
    headerField(header.appName, 48),
    headerField(header.procId ?? String(process.pid), 128),
    headerField(record.type, 32),
    '-',
    JSON.stringify(record),
  ].join(' ');
}

/** RFC 6587 §3.4.1 octet counting: the message's length in bytes, a space, the message. */
export function octetCounted(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `, 'ascii'), body]);
}
