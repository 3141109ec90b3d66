import type { NextFunction, Request, Response } from 'express';
import { InvalidRequest } from '../errors.js';
import { inspectJson, MAX_JSON_DEPTH } from '../json-limits.js';

/**
 * Refuses, before routing and audit, a JSON body that nests deeper than MAX_JSON_DEPTH or holds a
 * NUL character (`\u0000`) in a string or key: neither can be a real request, the first would
 * overflow every recursive walk after this one (the audit scrub among them), and PostgreSQL
 * cannot store the second in jsonb or text.
 */
export function refuseUnstorableJson(req: Request, _res: Response, next: NextFunction): void {
  const { tooDeep, hasNul } = inspectJson(req.body);
  if (tooDeep) return next(new InvalidRequest(`the request body nests deeper than ${MAX_JSON_DEPTH} levels`));
  if (hasNul)
    return next(new InvalidRequest('the request body contains a NUL character (\\u0000), which is not accepted'));
  next();
}
