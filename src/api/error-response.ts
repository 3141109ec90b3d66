import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import type { Logger } from 'pino';
import { BrokerError, RevokeIncomplete } from '../errors.js';

/** Vault's status codes, by our stable error codes. */
const STATUS_BY_CODE: Record<string, number> = {
  ERR_INVALID_REQUEST: 400,
  ERR_UNKNOWN_ROLE: 400,
  ERR_UNKNOWN_MOUNT: 400,
  ERR_LEASE_NOT_FOUND: 400,
  ERR_LEASE_EXPIRED: 400,
  ERR_PERMISSION_DENIED: 403,
  ERR_INVALID_TOKEN: 403,
  ERR_UNKNOWN_PATH: 404,
  ERR_UNSUPPORTED_OPERATION: 405,
  ERR_ISSUE_REVOKED: 409,
  ERR_QUOTA: 429,
  ERR_TARGET: 502,
  ERR_CREDENTIAL_DISABLED: 502,
  ERR_REVOKE_INCOMPLETE: 502,
  ERR_STORE_UNAVAILABLE: 503,
  ERR_AUDIT_UNAVAILABLE: 503,
};

/** body-parser's own client errors. */
function bodyParserError(err: unknown): { status: number; message: string } | null {
  const type = (err as { type?: string }).type;
  if (type === 'entity.parse.failed') return { status: 400, message: 'failed to parse JSON input: the body is not valid JSON' };
  if (type === 'entity.too.large') return { status: 413, message: 'request body too large' };
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return { status: 415, message: 'unsupported body encoding' };
  // Anything else body-parser refuses (a gzip body that does not inflate, …) is still the client's.
  const { status, expose } = err as { status?: number; expose?: boolean };
  if (expose && typeof status === 'number' && status >= 400 && status < 500) return { status, message: 'malformed request body' };
  return null;
}

/**
 * PostgreSQL refusing a value for what it contains: U+0000 in jsonb (22P05) or text (22021). Only
 * data a client sent carries one; request bodies are refused at the edge (body-shape.ts), so this
 * catches what arrives another way, such as a claim inside a signed login token.
 */
const UNSTORABLE_VALUE_SQLSTATES = new Set(['22P05', '22021']);
const UNSTORABLE_VALUE_MESSAGE = 'a value in the request contains a NUL character (\\u0000), which is not accepted';
function unstorableValue(err: unknown): boolean {
  for (let e = err, hops = 0; e && typeof e === 'object' && hops < 5; e = (e as { cause?: unknown }).cause, hops++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNSTORABLE_VALUE_SQLSTATES.has(code)) return true;
  }
  return false;
}

/** The HTTP status an error answers with: the same table for the answer and for its audit record. */
export function statusFor(err: unknown): number {
  if (unstorableValue(err)) return 400;
  const parsed = bodyParserError(err);
  if (parsed) return parsed.status;
  if (err instanceof BrokerError && STATUS_BY_CODE[err.code]) return STATUS_BY_CODE[err.code]!;
  return 500;
}

/** Writes Vault's `{"errors": [...]}`. An unknown error is a 500 with a request id; details go only to the log. */
export function sendError(res: Response, err: unknown, log: Logger, requestId: string = randomUUID()): void {
  if (unstorableValue(err)) {
    res.status(400).json({ errors: [UNSTORABLE_VALUE_MESSAGE] });
    return;
  }
  const parsed = bodyParserError(err);
  if (parsed) {
    res.status(parsed.status).json({ errors: [parsed.message] });
    return;
  }
  if (err instanceof BrokerError && STATUS_BY_CODE[err.code]) {
    const status = statusFor(err);
    if (status >= 500) log.warn({ request_id: requestId, code: err.code, err: err.message }, 'request failed');
    const body: Record<string, unknown> = { errors: [err.message, ...err.details] };
    if (err instanceof RevokeIncomplete) {
      body.errors = [err.message, ...err.failures.map((f) => `${f.leaseId}: ${f.error}`)];
      body.data = { revoked: err.revoked, failed: err.failures.map((f) => ({ lease_id: f.leaseId, error: f.error })) };
    }
    res.status(status).json(body);
    return;
  }
  log.error({ request_id: requestId, err }, 'internal error');
  res.status(500).json({ errors: [`internal error; request id ${requestId}`] });
}
