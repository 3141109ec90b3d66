/** Pairs remembered; past this the oldest go first (their next alert is let through). */
const MAX_KEYS = 10_000;

/** Lets one alert per (subject, detector) through within `windowMs` of the last one let through. */
export class AlertDedup {
  private readonly last = new Map<string, number>();

  constructor(private readonly windowMs: number) {}

  /** True when this alert should go out; records it as the pair's last. */
  admit(detector: string, subject: string, now: number): boolean {
    const key = `${detector}\u0000${subject}`;
    const last = this.last.get(key);
    if (last !== undefined && now - last < this.windowMs) return false;
    this.last.delete(key);
    this.last.set(key, now);
    if (this.last.size > MAX_KEYS) this.last.delete(this.last.keys().next().value!);
    return true;
  }
}
