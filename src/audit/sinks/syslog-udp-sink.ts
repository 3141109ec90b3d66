import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { AuditRecord } from '../record.js';
import type { AuditSink } from '../sinks.js';
import { SinkBuffer, type BufferedEntry } from './sink-buffer.js';
import type { SyslogSinkConfig } from './sink-config.js';
import { SinkWriteError, closed } from './sink-errors.js';
import { formatSyslog } from './syslog-format.js';

/**
 * The largest UDP payload over IPv4. Records are capped at 16 KiB before they reach a sink, so a
 * message fits; one that does not is refused rather than cut, since a torn JSON MSG is useless.
 * Datagrams above the path MTU are fragmented by IP; receivers on a lossy path should use TCP.
 */
export const MAX_DATAGRAM_BYTES = 65_507;

/**
 * RFC 5424 over UDP (RFC 5426): one datagram per record. Accepted once the kernel has sent it;
 * UDP cannot tell whether the receiver got it.
 */
export class SyslogUdpSink implements AuditSink {
  readonly name: string;
  readonly timeoutMs: number;
  private readonly buffer: SinkBuffer<BufferedEntry>;
  private socket: Socket | undefined;
  private closed = false;

  constructor(private readonly config: SyslogSinkConfig) {
    this.name = `syslog:udp://${config.address.host}:${config.address.port}`;
    this.timeoutMs = config.timeout;
    this.buffer = new SinkBuffer(this.name, config.buffer, config.timeout);
  }

  get buffered(): number {
    return this.buffer.size;
  }

  write(record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(closed(this.name));
    const message = Buffer.from(
      formatSyslog(record, { facility: this.config.facility, appName: this.config.app_name }),
      'utf8',
    );
    if (message.length > MAX_DATAGRAM_BYTES)
      return Promise.reject(new SinkWriteError('ERR_SYSLOG_TOO_LARGE', `record too large for ${this.name}`));
    return new Promise<void>((resolve, reject) => {
      const entry: BufferedEntry = { queuedAt: performance.now(), resolve, reject };
      this.buffer.admit(entry);
      this.socket ??= this.openSocket();
      this.socket.send(message, this.config.address.port, this.config.address.host, (err) =>
        err ? this.buffer.fail(entry, err) : this.buffer.accept(entry),
      );
    });
  }

  private openSocket(): Socket {
    const socket = createSocket(isIPv6(this.config.address.host) ? 'udp6' : 'udp4');
    // An ICMP port-unreachable surfaces here on some systems; each send reports its own outcome.
    socket.on('error', () => undefined);
    return socket;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.buffer.failAll(closed(this.name));
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
