/** Keys past this are dropped oldest first: an attacker inventing subjects cannot grow memory without bound. */
const MAX_KEYS = 10_000;

/**
 * Per-key event times within a sliding window. add() answers how many fell within the window,
 * itself included; each key keeps at most `cap` times, so a burst costs constant memory.
 */
export class SlidingCount {
  private readonly times = new Map<string, number[]>();

  constructor(
    private readonly windowMs: number,
    private readonly cap: number,
  ) {}

  add(key: string, now: number): number {
    let times = this.times.get(key);
    if (times) this.times.delete(key);
    else times = [];
    const since = now - this.windowMs;
    let drop = 0;
    while (drop < times.length && times[drop]! <= since) drop++;
    if (drop) times.splice(0, drop);
    times.push(now);
    if (times.length > this.cap) times.shift();
    // Re-inserted last: the Map's order is least recently used first.
    this.times.set(key, times);
    if (this.times.size > MAX_KEYS) this.times.delete(this.times.keys().next().value!);
    return times.length;
  }

  /** Forgets a key's times, after it fired: the next alert needs a whole new burst. */
  reset(key: string): void {
    this.times.delete(key);
  }
}
