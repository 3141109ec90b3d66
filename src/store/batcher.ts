/**
 * Coalesces concurrent calls into one: the first call is flushed at once, and calls arriving
 * while a flush is in flight wait and go together in the next. At low load this adds no latency;
 * under load it turns N round trips (and N commits) into one.
 */
export class Batcher<In, Out> {
  private queue: { item: In; resolve: (out: Out) => void; reject: (err: unknown) => void }[] = [];
  private flushing = false;

  constructor(
    /** Must answer one output per input, in order, or throw for the whole batch. */
    private readonly flush: (items: In[]) => Promise<Out[]>,
    private readonly maxBatch = 256,
  ) {}

  run(item: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.flushing) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.flushing = true;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        const outputs = await this.flush(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(outputs[i]!));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.flushing = false;
  }
}
