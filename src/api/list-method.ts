import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';

/**
 * Vault clients send the non-standard `LIST` verb, which Node's HTTP parser rejects before any
 * handler runs. When that is the parse error, the request line is rewritten to Vault's own
 * equivalent, `GET …?list=true`, and the connection is handed back to the server through a
 * stream that replays the rewritten bytes and then passes the socket's data through.
 */
export function acceptListMethod(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => {
    const raw = err.rawPacket;
    if (err.code !== 'HPE_INVALID_METHOD' || !raw || raw.subarray(0, 5).toString('latin1') !== 'LIST ') {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
      return;
    }
    const text = raw.toString('latin1');
    const lineEnd = text.indexOf('\r\n');
    const [, target = '/', version = 'HTTP/1.1'] = text.slice(0, lineEnd === -1 ? undefined : lineEnd).split(' ');
    const listTarget = `${target}${target.includes('?') ? '&' : '?'}list=true`;
    const rewritten = Buffer.concat([Buffer.from(`GET ${listTarget} ${version}`, 'latin1'), raw.subarray(lineEnd)]);
    server.emit('connection', replay(socket, rewritten));
  });
}

function replay(socket: Duplex, first: Buffer): Duplex {
  const stream = new Duplex({
    read: () => void socket.resume(),
    write: (chunk, encoding, done) => void socket.write(chunk, encoding, done),
    final: (done) => {
      socket.end();
      done();
    },
    destroy: (error, done) => {
      socket.destroy(error ?? undefined);
      done(error);
    },
  });
  // Express reads the client's address from the socket.
  Object.defineProperty(stream, 'remoteAddress', { value: (socket as Socket).remoteAddress });
  socket.on('data', (chunk) => {
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on('end', () => stream.push(null));
  socket.on('close', () => stream.destroy());
  stream.push(first);
  return stream;
}
