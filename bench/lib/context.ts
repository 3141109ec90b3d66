import type { EmbeddedServer } from '../../src/store/embedded-postgres.js';

export interface Scenario {
  name: string;
  unit: string;
  broker: number;
  raw: number;
  ratio: number;
  [extra: string]: unknown;
}

export interface BenchContext {
  server: EmbeddedServer;
  quick: boolean;
  /** One line on stderr per step, so a long run shows where it is. */
  progress(message: string): void;
  record(scenario: Scenario): void;
}
