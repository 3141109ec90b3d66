import { readFileSync } from 'node:fs';
import { connect, isIP, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { ConfigError } from '../../errors.js';
import type { AuditRecord } from '../record.js';
import type { AuditSink } from '../sinks.js';
import { SinkBuffer, type BufferedEntry } from './sink-buffer.js';
import type { SyslogSinkConfig } from './sink-config.js';
import { closed } from './sink-errors.js';
import { formatSyslog, octetCounted } from './syslog-format.js';

interface Frame extends BufferedEntry {
  readonly bytes: Buffer;
  /** The connection it was last handed to; cleared when that connection fails, so it is sent again. */
  sentOn?: Socket;
}

function readTlsFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`audit.syslog.tls: cannot read ${path}`, { cause: err });
  }
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5000;

/**
 * RFC 5424 over TCP with octet-counting framing (RFC 6587 §3.4.1). A record is accepted once the
 * kernel has taken its frame (TCP syslog has no acknowledgement). Frames on a connection that
 * drops before that are sent again on the next one, so a receiver may see a record twice, never
 * a torn one. The connection is made on the first write and remade with exponential backoff
 * (with jitter) while records wait.
 */
export class SyslogTcpSink implements AuditSink {
  readonly name: string;
  readonly timeoutMs: number;
  private readonly buffer: SinkBuffer<Frame>;
  private socket: Socket | undefined;
  private connected = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoffMs = MIN_BACKOFF_MS;
  private closed = false;
  /** Present when the sink speaks TLS: files read once, at start, so a missing one fails the config. */
  private readonly tls: ConnectionOptions | undefined;

  constructor(private readonly config: SyslogSinkConfig) {
    this.name = `syslog:${config.tls ? 'tls' : 'tcp'}://${config.address.host}:${config.address.port}`;
    this.tls = config.tls && {
      ...(config.tls.ca_file ? { ca: readTlsFile(config.tls.ca_file) } : {}),
      ...(config.tls.cert_file ? { cert: readTlsFile(config.tls.cert_file) } : {}),
      ...(config.tls.key_file ? { key: readTlsFile(config.tls.key_file) } : {}),
      // SNI takes a name, never an address; the certificate is then checked against the address.
      servername: config.tls.server_name ?? (isIP(config.address.host) ? undefined : config.address.host),
    };
    this.timeoutMs = config.timeout;
    this.buffer = new SinkBuffer(this.name, config.buffer, config.timeout);
  }

  get buffered(): number {
    return this.buffer.size;
  }

  write(record: AuditRecord): Promise<void> {
    if (this.closed) return Promise.reject(closed(this.name));
    const bytes = octetCounted(formatSyslog(record, { facility: this.config.facility, appName: this.config.app_name }));
    return new Promise<void>((resolve, reject) => {
      const frame: Frame = { bytes, queuedAt: performance.now(), resolve, reject };
      this.buffer.admit(frame);
      if (this.connected) this.send(frame);
      else this.connect();
    });
  }

  private send(frame: Frame): void {
    const socket = this.socket!;
    frame.sentOn = socket;
    socket.write(frame.bytes, (err) => {
      if (!err) this.buffer.accept(frame);
      else if (frame.sentOn === socket) frame.sentOn = undefined;
    });
  }

  private connect(): void {
    if (this.socket || this.reconnectTimer || this.closed) return;
    const target = { host: this.config.address.host, port: this.config.address.port };
    const socket = this.tls ? connectTls({ ...target, ...this.tls }) : connect(target);
    this.socket = socket;
    socket.setNoDelay(true);
    // A connect that never answers is given up after the sink's timeout, and retried.
    const connectTimer = setTimeout(() => socket.destroy(), this.timeoutMs);
    socket.once(this.tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(connectTimer);
      this.connected = true;
      this.backoffMs = MIN_BACKOFF_MS;
      for (const frame of this.buffer.values()) if (!frame.sentOn) this.send(frame);
    });
    // What a receiver sends back is not part of the protocol; 'close' follows any error.
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(connectTimer);
      this.socket = undefined;
      this.connected = false;
      for (const frame of this.buffer.values()) if (frame.sentOn === socket) frame.sentOn = undefined;
      if (!this.closed && this.buffer.size > 0) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Refuses what is still waiting and ends the connection after what the kernel holds is sent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.buffer.failAll(closed(this.name));
    const socket = this.socket;
    if (!socket) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => socket.destroy(), this.timeoutMs);
      socket.once('close', () => {
        clearTimeout(force);
        resolve();
      });
      socket.end();
    });
  }
}
