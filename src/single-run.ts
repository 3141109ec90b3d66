/**
 * One run at a time of a periodic job, for a timer that may fire while the last run is still
 * going: a call during a run joins it instead of starting another, and after stop() nothing new
 * starts. The work must not throw (the caller logs its own failures).
 */
export class SingleRun {
  private running: Promise<void> | null = null;
  private stopped = false;

  get isStopped(): boolean {
    return this.stopped;
  }

  run(work: () => Promise<void>): Promise<void> {
    if (this.running || this.stopped) return this.running ?? Promise.resolve();
    this.running = work().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Starts nothing more, and waits for the run in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }
}
