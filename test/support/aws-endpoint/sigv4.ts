// test-only: never shipped
/**
 * AWS Signature Version 4, verifier side, written from the published algorithm with node:crypto only:
 * canonical request -> string to sign -> HMAC chain of the secret -> hex signature, compared timing-safe.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { incompleteSignature } from './errors.js';

export const ALGORITHM = 'AWS4-HMAC-SHA256';

export interface AuthorizationHeader {
  accessKeyId: string;
  /** YYYYMMDD from the credential scope. */
  date: string;
  region: string;
  service: string;
  terminator: string;
  /** `date/region/service/aws4_request` */
  scope: string;
  signedHeaders: string[];
  signature: string;
}

/** Parses `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sts/aws4_request, SignedHeaders=a;b, Signature=hex`. */
export function parseAuthorization(value: string): AuthorizationHeader {
  const space = value.indexOf(' ');
  const algorithm = space < 0 ? value : value.slice(0, space);
  if (algorithm !== ALGORITHM) throw incompleteSignature(`Unsupported AWS 'algorithm': '${algorithm}'.`);
  const fields = new Map<string, string>();
  for (const part of value.slice(space + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signedHeaders || !signature) {
    const missing = ['Credential', 'SignedHeaders', 'Signature'].filter((k) => !fields.get(k));
    throw incompleteSignature(
      `Authorization header requires ${missing.map((m) => `'${m}'`).join(', ')} parameter(s). Authorization=${value}`,
    );
  }
  const parts = credential.split('/');
  if (parts.length !== 5 || parts.some((p) => p === '')) {
    throw incompleteSignature(
      `Authorization header requires a 'Credential' of the form AccessKeyId/date/region/service/aws4_request. Credential=${credential}`,
    );
  }
  const [accessKeyId, date, region, service, terminator] = parts as [string, string, string, string, string];
  return {
    accessKeyId,
    date,
    region,
    service,
    terminator,
    scope: `${date}/${region}/${service}/${terminator}`,
    signedHeaders: signedHeaders.split(';'),
    signature,
  };
}

/** `YYYYMMDDTHHMMSSZ` -> Date, or undefined when malformed. */
export function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  const date = new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!));
  return Number.isNaN(date.getTime()) ? undefined : date;
}

export function formatAmzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

/** RFC 3986 percent-encoding: everything but A-Z a-z 0-9 - _ . ~ */
export function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * Canonical URI for every service but S3: the path as it arrived (already encoded once by the client),
 * dot segments resolved, each segment encoded again, i.e. "encoded twice".
 */
export function canonicalUri(rawPath: string): string {
  const out: string[] = [];
  const segments = rawPath.split('/');
  for (const segment of segments.slice(1)) {
    if (segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(uriEncode(segment));
  }
  return '/' + out.join('/');
}

/** Query parameters decoded, re-encoded strictly, sorted by name then value. */
export function canonicalQuery(rawQuery: string): string {
  if (!rawQuery) return '';
  return rawQuery
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      const name = eq < 0 ? p : p.slice(0, eq);
      const value = eq < 0 ? '' : p.slice(eq + 1);
      return [uriEncode(safeDecode(name)), uriEncode(safeDecode(value))] as const;
    })
    .sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join('&');
}

/** Header name (lower-case) -> values in arrival order, from node's rawHeaders [name, value, name, value, ...]. */
export function headerValues(rawHeaders: string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    map.set(name, [...(map.get(name) ?? []), rawHeaders[i + 1]!]);
  }
  return map;
}

/** `name:value\n` for each signed header: values trimmed, inner whitespace runs collapsed, repeats joined by ','. */
export function canonicalHeaders(headers: Map<string, string[]>, signedHeaders: string[]): string {
  return signedHeaders
    .map((name) => {
      const values = (headers.get(name) ?? []).map((v) => v.trim().replace(/\s+/g, ' '));
      return `${name}:${values.join(',')}\n`;
    })
    .join('');
}

export const sha256Hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

export interface SignableRequest {
  method: string;
  rawPath: string;
  rawQuery: string;
  headers: Map<string, string[]>;
  payloadHash: string;
}

export function canonicalRequest(req: SignableRequest, signedHeaders: string[]): string {
  return [
    req.method.toUpperCase(),
    canonicalUri(req.rawPath),
    canonicalQuery(req.rawQuery),
    canonicalHeaders(req.headers, signedHeaders),
    signedHeaders.join(';'),
    req.payloadHash,
  ].join('\n');
}

export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate, scope, sha256Hex(canonical)].join('\n');
}

export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
}

/** The signature the client should have sent, given the secret of the key it named. */
export function expectedSignature(
  req: SignableRequest,
  auth: AuthorizationHeader,
  amzDate: string,
  secret: string,
): string {
  const toSign = stringToSign(amzDate, auth.scope, canonicalRequest(req, auth.signedHeaders));
  return createHmac('sha256', signingKey(secret, auth.date, auth.region, auth.service))
    .update(toSign, 'utf8')
    .digest('hex');
}

/** Constant-time comparison of two hex signatures (a length mismatch is simply "different"). */
export function signaturesEqual(expected: string, provided: string): boolean {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(provided, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}
