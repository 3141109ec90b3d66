/**
 * Every HTTP answer this test process receives through the global fetch (the LoadDriver's among
 * them), with when its request started and ended: so a test can say what was answered during an
 * outage, and how fast. The real fetch still does the work; install() returns the uninstall.
 */
export interface Answer {
  method: string;
  path: string;
  startedAt: number;
  endedAt: number;
  /** The HTTP status, or null when the connection failed (refused, reset, timed out). */
  status: number | null;
  /** The body of a 5xx answer (an error never carries a secret), to see what it said. */
  errorBody?: string;
}

export class AnswerLog {
  readonly answers: Answer[] = [];

  install(): () => void {
    const real = globalThis.fetch;
    const log = this.answers;
    globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const entry: Answer = {
        method: init?.method ?? 'GET',
        path: url.pathname,
        startedAt: Date.now(),
        endedAt: 0,
        status: null,
      };
      try {
        const res = await real(input, init);
        entry.status = res.status;
        if (res.status >= 500) entry.errorBody = await res.clone().text();
        return res;
      } finally {
        // Headers are in: the answer has arrived, whatever its body still takes.
        entry.endedAt = Date.now();
        log.push(entry);
      }
    };
    return () => {
      globalThis.fetch = real;
    };
  }

  /** The answers to requests that started within [from, to). */
  startedBetween(from: number, to: number): Answer[] {
    return this.answers.filter((a) => a.startedAt >= from && a.startedAt < to);
  }
}
