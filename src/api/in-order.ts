import type { NextFunction, Request, Response } from 'express';

/**
 * Runs the requests of one connection one at a time, in the order they arrived.
 *
 * Node's HTTP server dispatches pipelined requests as soon as it has parsed them and only orders
 * the answers, so `PUT …/revoke` then `LIST` in one write could list the lease it is revoking, and
 * a revoke could race the issue sent before it. RFC 9112 §9.3.2 allows parallel processing only
 * of pipelined requests that are all safe; Vault (Go's server) reads the next request only after
 * answering the previous one. Each request here waits until the previous one on its socket has
 * finished (or its client went away).
 */
export function oneRequestAtATimePerConnection() {
  const last = new WeakMap<object, Promise<void>>();
  return (req: Request, res: Response, next: NextFunction): void => {
    const previous = last.get(req.socket);
    const finished = new Promise<void>((resolve) => {
      res.once('finish', resolve);
      res.once('close', resolve);
    });
    last.set(req.socket, previous ? previous.then(() => finished) : finished);
    if (previous) void previous.then(() => next());
    else next();
  };
}
