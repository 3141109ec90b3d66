import { bufferFull, stalled } from './sink-errors.js';

/** A record a sink has taken but not yet had accepted; `queuedAt` is performance.now() when it came. */
export interface BufferedEntry {
  readonly queuedAt: number;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * The records one streaming sink holds that its receiver has not accepted yet, oldest first.
 * It refuses a new record at once when it already holds `capacity`, or when its oldest record has
 * waited `timeoutMs` or more: a receiver that is not answering then costs a request nothing
 * instead of one more timeout, and the sink takes records again as soon as it drains.
 */
export class SinkBuffer<E extends BufferedEntry> {
  private readonly entries = new Set<E>();

  constructor(
    private readonly name: string,
    private readonly capacity: number,
    private readonly timeoutMs: number,
  ) {}

  /** Throws ERR_SINK_BUFFER_FULL or ERR_SINK_STALLED when a record must be refused. */
  admit(entry: E): void {
    if (this.entries.size >= this.capacity) throw bufferFull(this.name);
    const oldest = this.oldest();
    if (oldest && entry.queuedAt - oldest.queuedAt >= this.timeoutMs) throw stalled(this.name);
    this.entries.add(entry);
  }

  accept(entry: E): void {
    if (this.entries.delete(entry)) entry.resolve();
  }

  fail(entry: E, err: unknown): void {
    if (this.entries.delete(entry)) entry.reject(err);
  }

  failAll(err: unknown): void {
    for (const entry of [...this.entries]) this.fail(entry, err);
  }

  get size(): number {
    return this.entries.size;
  }

  /** In the order they came. */
  values(): IterableIterator<E> {
    return this.entries.values();
  }

  private oldest(): E | undefined {
    return this.entries.values().next().value;
  }
}
