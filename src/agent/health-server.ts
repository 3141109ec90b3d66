import http from 'node:http';

/** The sidecar's readiness probe: `GET /ready` answers 200 once every file is written, 503 before. */
export interface HealthServer {
  setReady(ready: boolean): void;
  close(): Promise<void>;
}

export async function startHealthServer(address: string): Promise<HealthServer> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  let ready = false;
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET' || (path !== '/ready' && path !== '/health')) {
      res.writeHead(404).end();
      return;
    }
    // /health: the process answers; /ready: and its files are written.
    const ok = path === '/health' || ready;
    res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not ready\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`health: cannot listen on ${address}: ${err.code ?? err.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  return {
    setReady: (value) => (ready = value),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
