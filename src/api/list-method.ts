import type { Server } from 'node:http';
import { Duplex } from 'node:stream';
import type { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';

/** Longer lines are left to the HTTP parser, which refuses them (its header limit is 16 KiB). */
const MAX_LINE = 64 * 1024;

type Framing = { kind: 'none' } | { kind: 'length'; bytes: number } | { kind: 'chunked' } | { kind: 'opaque' };

/**
 * Rewrites Vault's `LIST <target>` request lines to `GET <target>?list=true` in a client's byte
 * stream, before Node's HTTP parser (llhttp, which knows no LIST and has no option to add a
 * method) sees them.
 *
 * Only request lines are rewritten: the rewriter follows HTTP/1.1 message framing (Content-Length
 * and chunked bodies), so body bytes that read "LIST " pass untouched, and a request line split
 * across reads is held until it is whole. Whatever it does not understand (conflicting or invalid
 * framing headers, a CONNECT, an over-long line) makes it stop rewriting for the rest of the
 * connection and pass bytes through as they are: the parser then refuses that message itself, so
 * the two never disagree about where a message ends.
 */
export class ListRewriter {
  private state:
    'request-line' | 'headers' | 'body' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'opaque' =
    'request-line';
  /** The current line so far (request line, header, chunk size or trailer), held until its LF. */
  private line: Buffer[] = [];
  private lineLength = 0;
  /** Body or chunk bytes still to pass through. */
  private remaining = 0;
  private isConnect = false;
  private contentLength: number | null = null;
  private transferEncoding: string[] = [];
  private badFraming = false;

  /** The bytes to hand to the HTTP parser for this chunk of input (possibly fewer: a partial line is held). */
  push(chunk: Buffer): Buffer {
    if (this.state === 'opaque') return chunk;
    const out: Buffer[] = [];
    let changed = this.lineLength > 0;
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'opaque') {
        out.push(chunk.subarray(i));
        break;
      }
      if (this.state === 'body' || this.state === 'chunk-data') {
        const n = Math.min(this.remaining, chunk.length - i);
        out.push(chunk.subarray(i, i + n));
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = this.state === 'body' ? 'request-line' : 'chunk-end';
        continue;
      }
      const lf = chunk.indexOf(0x0a, i);
      const end = lf === -1 ? chunk.length : lf + 1;
      this.line.push(chunk.subarray(i, end));
      this.lineLength += end - i;
      i = end;
      if (this.lineLength > MAX_LINE) {
        out.push(...this.line);
        this.resetLine();
        this.state = 'opaque';
        continue;
      }
      if (lf === -1) {
        changed = true; // held back: the output differs from the input
        continue;
      }
      const raw = Buffer.concat(this.line, this.lineLength);
      this.resetLine();
      const replaced = this.onLine(raw);
      if (replaced !== raw) changed = true;
      out.push(replaced);
    }
    return changed ? Buffer.concat(out) : chunk;
  }

  /** At the end of input: whatever partial line is held, for the parser to refuse. */
  flush(): Buffer {
    const held = Buffer.concat(this.line, this.lineLength);
    this.resetLine();
    return held;
  }

  private resetLine() {
    this.line = [];
    this.lineLength = 0;
  }

  /** Handles one whole line (with its line ending); returns the bytes to pass on. */
  private onLine(raw: Buffer): Buffer {
    const text = raw.toString('latin1').replace(/\r?\n$/, '');
    switch (this.state) {
      case 'request-line':
        // Empty lines before a request line are tolerated by the parser too.
        if (text === '') return raw;
        this.state = 'headers';
        this.isConnect = text.startsWith('CONNECT ');
        this.contentLength = null;
        this.transferEncoding = [];
        this.badFraming = false;
        return text.startsWith('LIST ') ? asGet(text, raw) : raw;
      case 'headers':
        if (text === '') this.startBody();
        else this.onHeader(text);
        return raw;
      case 'chunk-size': {
        const size = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(text);
        if (!size) this.state = 'opaque';
        else if ((this.remaining = parseInt(size[1]!, 16)) === 0) this.state = 'trailers';
        else this.state = 'chunk-data';
        return raw;
      }
      case 'chunk-end':
        this.state = text === '' ? 'chunk-size' : 'opaque';
        return raw;
      case 'trailers':
        if (text === '') this.state = 'request-line';
        return raw;
      default:
        return raw;
    }
  }

  private onHeader(text: string) {
    // A folded line continues the previous header: too ambiguous to follow.
    if (text.startsWith(' ') || text.startsWith('\t')) return void (this.badFraming = true);
    const colon = text.indexOf(':');
    if (colon <= 0) return void (this.badFraming = true);
    const name = text.slice(0, colon).trim().toLowerCase();
    const value = text.slice(colon + 1).trim();
    if (name === 'content-length') {
      const n = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
      if (Number.isNaN(n) || (this.contentLength !== null && this.contentLength !== n)) this.badFraming = true;
      else this.contentLength = n;
    } else if (name === 'transfer-encoding') {
      this.transferEncoding.push(...value.split(',').map((v) => v.trim().toLowerCase()));
    }
  }

  private startBody() {
    const framing = this.framing();
    if (framing.kind === 'opaque') this.state = 'opaque';
    else if (framing.kind === 'chunked') this.state = 'chunk-size';
    else if (framing.kind === 'length' && framing.bytes > 0) {
      this.state = 'body';
      this.remaining = framing.bytes;
    } else this.state = 'request-line';
  }

  /**
   * How the body of the request whose headers just ended is delimited (RFC 9112 §6.3). A request
   * with no Content-Length and no Transfer-Encoding has no body. What the parser would refuse, or
   * bytes that are no longer HTTP after a CONNECT, end the rewriting. (The server has no `upgrade`
   * listener, so Node answers an `Upgrade:` request as a plain request and the stream stays HTTP.)
   */
  private framing(): Framing {
    if (this.isConnect || this.badFraming) return { kind: 'opaque' };
    if (this.transferEncoding.length) {
      if (this.contentLength !== null || this.transferEncoding.at(-1) !== 'chunked') return { kind: 'opaque' };
      return { kind: 'chunked' };
    }
    return this.contentLength === null ? { kind: 'none' } : { kind: 'length', bytes: this.contentLength };
  }
}

/** `LIST <target> <version>` → `GET <target>?list=true <version>`, keeping the line ending. */
function asGet(text: string, raw: Buffer): Buffer {
  const parts = text.split(' ');
  if (parts.length !== 3) return raw; // malformed: the parser refuses it as it is
  const [, target, version] = parts as [string, string, string];
  const ending = raw.subarray(Buffer.byteLength(text, 'latin1'));
  return Buffer.concat([
    Buffer.from(`GET ${target}${target.includes('?') ? '&' : '?'}list=true ${version}`, 'latin1'),
    ending,
  ]);
}

/**
 * What the HTTP server reads and writes instead of the accepted socket: the socket's bytes with
 * LIST request lines rewritten, everything written passed to the socket. The few socket members
 * the server and express use (addresses, timeouts, `encrypted` for TLS) are forwarded.
 */
class ListAwareSocket extends Duplex {
  private readonly rewriter = new ListRewriter();

  constructor(private readonly socket: Socket) {
    super({ allowHalfOpen: true });
    socket.on('data', (chunk: Buffer) => {
      const out = this.rewriter.push(chunk);
      if (out.length && !this.push(out)) socket.pause();
    });
    socket.on('end', () => {
      const held = this.rewriter.flush();
      if (held.length) this.push(held);
      this.push(null);
    });
    socket.on('timeout', () => this.emit('timeout'));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  // Done as soon as the socket has taken the bytes, or once it drains: its own buffer is the only one.
  override _write(chunk: Buffer, encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.socket.write(chunk, encoding)) done();
    else this.socket.once('drain', () => done());
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    done: (err?: Error | null) => void,
  ): void {
    this.socket.cork();
    let flowing = true;
    for (const { chunk, encoding } of chunks) flowing = this.socket.write(chunk, encoding);
    this.socket.uncork();
    if (flowing) done();
    else this.socket.once('drain', () => done());
  }

  override _final(done: (err?: Error | null) => void): void {
    this.socket.end(() => done());
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.socket.destroy(err ?? undefined);
    done(err);
  }

  get remoteAddress() {
    return this.socket.remoteAddress;
  }
  get remotePort() {
    return this.socket.remotePort;
  }
  get remoteFamily() {
    return this.socket.remoteFamily;
  }
  get localAddress() {
    return this.socket.localAddress;
  }
  get localPort() {
    return this.socket.localPort;
  }
  /** True on a TLS socket: express's `req.secure` reads it. */
  get encrypted(): boolean {
    return (this.socket as Socket & { encrypted?: boolean }).encrypted === true;
  }
  // A TLS socket's peer, for the `cert` auth method: `req.socket` is this stream, not the TLSSocket.
  get authorized(): boolean {
    return (this.socket as Partial<TLSSocket>).authorized === true;
  }
  get authorizationError(): Error | undefined {
    return (this.socket as Partial<TLSSocket>).authorizationError;
  }
  getPeerCertificate(detailed?: boolean): PeerCertificate | DetailedPeerCertificate | undefined {
    return (this.socket as Partial<TLSSocket>).getPeerCertificate?.(detailed === true);
  }
  getPeerX509Certificate(): X509Certificate | undefined {
    return (this.socket as Partial<TLSSocket>).getPeerX509Certificate?.();
  }
  getProtocol(): string | null | undefined {
    return (this.socket as Partial<TLSSocket>).getProtocol?.();
  }
  address() {
    return this.socket.address();
  }
  setTimeout(ms: number, callback?: () => void): this {
    this.socket.setTimeout(ms);
    if (callback) this.once('timeout', callback);
    return this;
  }
  setNoDelay(noDelay?: boolean): this {
    this.socket.setNoDelay(noDelay);
    return this;
  }
  setKeepAlive(enable?: boolean, delay?: number): this {
    this.socket.setKeepAlive(enable, delay);
    return this;
  }
}

/**
 * Makes the server accept Vault's `LIST` verb on any request of any connection. Call before
 * `listen`. The server's own connection handler is given, once per accepted socket, a stream that
 * rewrites LIST request lines (see ListRewriter), so each connection has exactly one HTTP parser.
 *
 * The handler is the server's `connection` listener for plain HTTP; an HTTPS server attaches it
 * to `secureConnection` instead, so TLS (issue 12) passes that event name.
 */
export function acceptListMethod(server: Server, event: 'connection' | 'secureConnection' = 'connection'): void {
  const handlers = server.listeners(event) as Array<(socket: Duplex) => void>;
  if (handlers.length !== 1)
    throw new Error(
      `acceptListMethod: expected the server's own ${event} handler alone, found ${handlers.length} listeners`,
    );
  const [handler] = handlers as [(socket: Duplex) => void];
  server.removeListener(event, handler);
  server.on(event, (socket: Socket) => handler.call(server, new ListAwareSocket(socket)));
}
