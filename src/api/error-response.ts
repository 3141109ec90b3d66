import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import type { Logger } from 'pino';
import { BrokerError, RevokeIncomplete, type ErrorCode } from '../errors.js';

/**
 * Vault's status codes, by our stable error codes. A code whose status is 500 is internal: its
 * answer is the generic one with a request id, and its message goes only to the log.
 */
const STATUS_BY_CODE: Record<ErrorCode, number> = {
  ERR_BROKER: 500,
  ERR_INVALID_REQUEST: 400,
  ERR_UNKNOWN_ROLE: 400,
  ERR_UNKNOWN_MOUNT: 400,
  ERR_LEASE_NOT_FOUND: 400,
  ERR_LEASE_EXPIRED: 400,
  ERR_INVALID_WRAPPING_TOKEN: 400,
  ERR_PERMISSION_DENIED: 403,
  ERR_INVALID_TOKEN: 403,
  ERR_CERTIFICATE_REFUSED: 403,
  ERR_UNKNOWN_PATH: 404,
  ERR_UNSUPPORTED_OPERATION: 405,
  ERR_ISSUE_REVOKED: 409,
  ERR_IDEMPOTENT_LEASE_EXISTS: 409,
  ERR_QUOTA: 429,
  ERR_TARGET: 502,
  ERR_CREDENTIAL_DISABLED: 502,
  ERR_REVOKE_INCOMPLETE: 502,
  ERR_STORE_UNAVAILABLE: 503,
  ERR_AUDIT_UNAVAILABLE: 503,
  ERR_CONFIG: 500,
  ERR_LISTEN: 500,
};

/** Vault's error body, with the extension a partial revoke-prefix adds. */
export interface ErrorBody {
  errors: string[];
  data?: { revoked: number; failed: { lease_id: string; error: string }[] };
}

/** What an error answers: its status and body, and whether it is ours to explain (else only logged). */
export interface ErrorReply {
  status: number;
  body: ErrorBody;
  /** A known error (a client's mistake, a target or store down), as opposed to a bug. */
  known: boolean;
}

/** body-parser's own client errors. */
function bodyParserError(err: unknown): { status: number; message: string } | null {
  const type = (err as { type?: string }).type;
  if (type === 'entity.parse.failed')
    return { status: 400, message: 'failed to parse JSON input: the body is not valid JSON' };
  if (type === 'entity.too.large') return { status: 413, message: 'request body too large' };
  if (type === 'encoding.unsupported' || type === 'charset.unsupported')
    return { status: 415, message: 'unsupported body encoding' };
  // Anything else body-parser refuses (a gzip body that does not inflate, …) is still the client's.
  const { status, expose } = err as { status?: number; expose?: boolean };
  if (expose && typeof status === 'number' && status >= 400 && status < 500)
    return { status, message: 'malformed request body' };
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

function brokerErrorBody(err: BrokerError): ErrorBody {
  if (err instanceof RevokeIncomplete) {
    return {
      errors: [err.message, ...err.failures.map((f) => `${f.leaseId}: ${f.error}`)],
      data: { revoked: err.revoked, failed: err.failures.map((f) => ({ lease_id: f.leaseId, error: f.error })) },
    };
  }
  return { errors: [err.message, ...err.details] };
}

/**
 * The one mapping from an error to what it answers, for the HTTP answer and its audit record
 * alike. An unknown error (or an internal one) is a 500 naming only the request id.
 */
export function errorReply(err: unknown, requestId: string): ErrorReply {
  if (unstorableValue(err)) return { status: 400, body: { errors: [UNSTORABLE_VALUE_MESSAGE] }, known: true };
  const parsed = bodyParserError(err);
  if (parsed) return { status: parsed.status, body: { errors: [parsed.message] }, known: true };
  if (err instanceof BrokerError && STATUS_BY_CODE[err.code] !== 500) {
    return { status: STATUS_BY_CODE[err.code], body: brokerErrorBody(err), known: true };
  }
  return { status: 500, body: { errors: [`internal error; request id ${requestId}`] }, known: false };
}

/** The HTTP status an error answers with. */
export function statusFor(err: unknown): number {
  return errorReply(err, '').status;
}

/** Writes Vault's `{"errors": [...]}`. An unknown error is a 500 with a request id; details go only to the log. */
export function sendError(res: Response, err: unknown, log: Logger, requestId: string = randomUUID()): void {
  const reply = errorReply(err, requestId);
  if (!reply.known) log.error({ request_id: requestId, err }, 'internal error');
  else if (reply.status >= 500)
    log.warn({ request_id: requestId, code: (err as BrokerError).code, err: (err as Error).message }, 'request failed');
  res.status(reply.status).json(reply.body);
}
