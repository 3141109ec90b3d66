import { fstatSync, ftruncateSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type pg from 'pg';
import { Batcher } from '../store/batcher.js';
import type { AuditRecord } from './record.js';

/**
 * Somewhere audit records go. `write` resolves only once the record is durable enough to count
 * (handed to the OS, or committed) and rejects otherwise: the Auditor refuses a request that no
 * sink accepted. Records reach a sink already scrubbed.
 */
export interface AuditSink {
  readonly name: string;
  /** How long a write may take before the Auditor counts it failed; the Auditor's deadline when absent. */
  readonly timeoutMs?: number;
  /** Records taken but not yet accepted, for a sink that holds them (the streaming sinks). */
  readonly buffered?: number;
  write(line: AuditRecord): Promise<void>;
  close(): Promise<void>;
}

const toLine = (record: AuditRecord): string => `${JSON.stringify(record)}\n`;

class SinkClosed extends Error {
  readonly code = 'ERR_SINK_CLOSED';
  constructor(name: string) {
    super(`audit sink ${name} is closed`);
  }
}

/**
 * Appends one JSON line per record. The file is opened on the first write (mode 0600 if created)
 * and kept open; `reopen()` after a rotation starts a new file at the path. Writes, reopen and
 * close run one at a time, so lines never interleave and none goes to a handle being closed.
 */
export class FileSink implements AuditSink {
  readonly name: string;
  private handle: FileHandle | undefined;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** Set when a failed write could not be cut back: the file's length before it, to cut to before anything else is written. */
  private tornAt: number | undefined;
  // Lines arriving while a write is in flight go out together in the next one: under load, one
  // write per batch instead of one per record, and each caller still waits for its own line.
  private readonly lines = new Batcher<string, void>((lines) => this.append(lines.join('')));

  constructor(readonly path: string) {
    this.name = `file:${path}`;
  }

  write(record: AuditRecord): Promise<void> {
    return this.lines.run(toLine(record));
  }

  private append(text: string): Promise<void[]> {
    return this.serialized(async () => {
      if (this.closed) throw new SinkClosed(this.name);
      // A failed open is retried on the next write, so the sink recovers once the path is writable again.
      this.handle ??= await open(this.path, 'a', 0o600);
      const fd = this.handle.fd;
      if (this.tornAt !== undefined) {
        ftruncateSync(fd, this.tornAt);
        this.tornAt = undefined;
      }
      // Whole records or none: a write cut short (a full disk) is cut back to where it started,
      // so a torn record never merges into the next. Assumes one writer per file, as configured.
      const start = fstatSync(fd).size;
      try {
        // A synchronous append to the page cache takes microseconds; a threadpool round trip per
        // batch would add its latency to every request, which waits for its record.
        writeAll(fd, Buffer.from(text, 'utf8'));
      } catch (err) {
        try {
          ftruncateSync(fd, start);
        } catch {
          this.tornAt = start;
        }
        throw err;
      }
      return [];
    });
  }

  /** Closes the current file and opens the path again; rejects if it cannot, and later writes retry. */
  reopen(): Promise<void> {
    return this.serialized(async () => {
      if (this.closed) throw new SinkClosed(this.name);
      if (this.tornAt !== undefined && this.handle) ftruncateSync(this.handle.fd, this.tornAt);
      this.tornAt = undefined;
      await this.closeHandle();
      this.handle = await open(this.path, 'a', 0o600);
    });
  }

  close(): Promise<void> {
    return this.serialized(async () => {
      this.closed = true;
      await this.closeHandle();
    });
  }

  private async closeHandle(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** writeSync may write less than asked (a full disk, a signal): loop until all is written or it throws. */
function writeAll(fd: number, data: Buffer): void {
  for (let offset = 0; offset < data.length;) offset += writeSync(fd, data, offset);
}

/** One JSON line per record on stdout; resolves once the stream has handed the line on. */
export class StdoutSink implements AuditSink {
  readonly name = 'stdout';

  write(record: AuditRecord): Promise<void> {
    const line = toLine(record);
    return new Promise((resolve, reject) => {
      process.stdout.write(line, (err) => (err ? reject(err) : resolve()));
    });
  }

  async close(): Promise<void> {}
}

const INSERT = `
  INSERT INTO credbroker_audit
    (time, type, request_id, identity, remote_address, operation, path, lease_id, outcome, status, error, data)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`;

/** One row per record in credbroker_audit (migrations/0002_audit.sql), through the lease store's pool. */
export class PostgresSink implements AuditSink {
  readonly name = 'postgres';

  constructor(private readonly pool: pg.Pool) {}

  async write(r: AuditRecord): Promise<void> {
    await this.pool.query(INSERT, [
      r.time,
      r.type,
      r.request_id,
      // Passed as JSON text: pg would turn a top-level array into a PostgreSQL array, not jsonb.
      r.identity === undefined ? null : JSON.stringify(r.identity),
      r.remote_address ?? null,
      r.operation ?? null,
      r.path ?? null,
      r.lease_id ?? null,
      r.outcome ?? null,
      r.status ?? null,
      r.error ?? null,
      r.data === undefined ? null : JSON.stringify(r.data),
    ]);
  }

  /** The pool belongs to the lease store, which ends it. */
  async close(): Promise<void> {}
}
