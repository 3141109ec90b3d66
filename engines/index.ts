import type { Engine } from '../src/engines.js';
import { awsEngine } from './aws/index.js';
import { postgresEngine } from './postgres/index.js';

/** Every engine type this build knows: the `type` of a mount. */
export type EngineType = 'postgres' | 'aws';

/** The registry: one line per engine. A type above without its line here is a type error. */
export const engines = {
  postgres: postgresEngine,
  aws: awsEngine,
} satisfies Record<EngineType, Engine<unknown, unknown>>;
