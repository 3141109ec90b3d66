// test-only: never shipped
/**
 * AWS Query-protocol XML: `<{Action}Response xmlns=…><{Action}Result>…</…Result><ResponseMetadata>…`
 * and `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
 */
import type { AwsError } from './errors.js';

export type Service = 'sts' | 'iam';

export const NAMESPACES: Record<Service, string> = {
  sts: 'https://sts.amazonaws.com/doc/2011-06-15/',
  iam: 'https://iam.amazonaws.com/doc/2010-05-08/',
};

/** Plain data rendered to XML: objects become elements, arrays become `<member>` lists, Dates ISO-8601. */
export type XmlValue = string | number | boolean | Date | undefined | XmlValue[] | { [name: string]: XmlValue };

export function escapeXml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!,
  );
}

/** AWS timestamps in Query responses: second precision, `Z` suffix (e.g. 2024-05-01T12:00:00Z). */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function renderValue(value: XmlValue): string {
  if (value === undefined) return '';
  if (value instanceof Date) return isoSeconds(value);
  if (Array.isArray(value)) return value.map((v) => `<member>${renderValue(v)}</member>`).join('');
  if (typeof value === 'object') {
    return Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `<${k}>${renderValue(v)}</${k}>`)
      .join('');
  }
  return escapeXml(String(value));
}

/** An action's success body; `result` undefined means the action has no Result element (e.g. DeleteUser). */
export function successXml(service: Service, action: string, requestId: string, result: XmlValue): string {
  const inner = result === undefined ? '' : `<${action}Result>${renderValue(result)}</${action}Result>`;
  return (
    `<${action}Response xmlns="${NAMESPACES[service]}">${inner}` +
    `<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`
  );
}

export function errorXml(service: Service, error: AwsError, requestId: string): string {
  return (
    `<ErrorResponse xmlns="${NAMESPACES[service]}"><Error><Type>${error.type}</Type>` +
    `<Code>${escapeXml(error.code)}</Code><Message>${escapeXml(error.message)}</Message></Error>` +
    `<RequestId>${requestId}</RequestId></ErrorResponse>`
  );
}
