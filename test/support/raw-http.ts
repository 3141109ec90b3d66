import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  body: any;
}

/** One request as bytes on the wire. `path` is the request target as written (no normalisation). */
export function rawRequest(
  method: string,
  path: string,
  opts: { token?: string; body?: string; chunked?: string[]; headers?: Record<string, string> } = {},
): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1'];
  if (opts.token) lines.push(`X-Vault-Token: ${opts.token}`);
  for (const [name, value] of Object.entries(opts.headers ?? {})) lines.push(`${name}: ${value}`);
  let body = '';
  if (opts.chunked) {
    lines.push('Content-Type: application/json', 'Transfer-Encoding: chunked');
    body = opts.chunked.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') + '0\r\n\r\n';
  } else if (opts.body !== undefined) {
    lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(opts.body)}`);
    body = opts.body;
  }
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/**
 * A client connection that reads responses off the wire in order, as a kept-alive Vault client
 * would: the test sees exactly what came back on this one socket, nothing normalised by a client
 * library. Understands Content-Length and chunked responses; a response to HEAD has no body only
 * when read with `{ head: true }`.
 */
export class RawConnection {
  readonly socket: net.Socket;
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static open(url: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: hostname, port: Number(port) }, () => resolve(new RawConnection(socket)));
      socket.once('error', reject);
    });
  }

  /** Writes the bytes, optionally split at the given offsets into separate TCP writes. */
  async write(bytes: string | Buffer, splitAt: number[] = []): Promise<void> {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    let from = 0;
    for (const at of [...splitAt.filter((n) => n > 0 && n < data.length).sort((a, b) => a - b), data.length]) {
      if (at <= from) continue;
      await new Promise<void>((resolve, reject) =>
        this.socket.write(data.subarray(from, at), (err) => (err ? reject(err) : resolve())),
      );
      // Let the write leave as its own TCP segment.
      await new Promise((resolve) => setImmediate(resolve));
      from = at;
    }
  }

  private wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private async more(deadline: number): Promise<void> {
    if (this.ended)
      throw new Error(
        `connection closed by the server; unread: ${JSON.stringify(this.buffer.toString('latin1').slice(0, 500))}`,
      );
    const left = deadline - Date.now();
    if (left <= 0)
      throw new Error(
        `no complete response within the deadline; unread: ${JSON.stringify(this.buffer.toString('latin1').slice(0, 500))}`,
      );
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * The next response on the connection; throws if the server closes first or none arrives in time.
   * `head`: the request was a HEAD, so its answer carries no body whatever its Content-Length.
   * `skipInterim`: pass over 1xx interim answers (a `100 Continue`) to the final one.
   */
  async read(timeoutMs = 10_000, opts: { head?: boolean; skipInterim?: boolean } = {}): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await this.readOne(deadline, opts.head ?? false);
      if (!(opts.skipInterim && res.status >= 100 && res.status < 200)) return res;
    }
  }

  private async readOne(deadline: number, noBody: boolean): Promise<RawResponse> {
    let headEnd: number;
    while ((headEnd = this.buffer.indexOf('\r\n\r\n')) === -1) await this.more(deadline);
    const head = this.buffer.subarray(0, headEnd).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0]!)?.[1]);
    const headers: Record<string, string> = {};
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let offset = headEnd + 4;
    let body: Buffer;
    if (!noBody && headers['transfer-encoding']?.toLowerCase() === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        let lineEnd: number;
        while ((lineEnd = this.buffer.indexOf('\r\n', offset)) === -1) await this.more(deadline);
        const size = parseInt(this.buffer.subarray(offset, lineEnd).toString('latin1'), 16);
        while (this.buffer.length < lineEnd + 2 + size + 2) await this.more(deadline);
        parts.push(this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size));
        offset = lineEnd + 2 + size + 2;
        if (size === 0) break;
      }
      body = Buffer.concat(parts);
    } else {
      const length =
        noBody || status === 204 || status === 304 || (status >= 100 && status < 200)
          ? 0
          : Number(headers['content-length'] ?? 0);
      while (this.buffer.length < offset + length) await this.more(deadline);
      body = this.buffer.subarray(offset, offset + length);
      offset += length;
    }
    this.buffer = this.buffer.subarray(offset);
    const text = body.toString('utf8');
    let json: any;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status, headers, text, body: json };
  }

  /** True when nothing more arrives within `ms` and the server has not closed the connection. */
  async quietAndOpen(ms = 100): Promise<boolean> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return !this.ended && this.buffer.length === 0;
  }

  close(): void {
    this.socket.destroy();
  }
}
