/**
 * What an engine may use from src/ besides the contract (src/engines.ts): errors to throw,
 * randomness for names and secrets, a bound on concurrent calls, a call coalescer. An engine
 * imports nothing else from src/, so the core can change behind this one surface.
 */
export { CredentialDisabled, InvalidRequest } from './errors.js';
export { randomName, randomSecret, secureBytes } from './random.js';
export { Semaphore } from './semaphore.js';
export { Batcher } from './store/batcher.js';
export {
  describeConnectError,
  pgConnectionConfig,
  pgSslSchema,
  pgTlsOptions,
  unverifiedTlsWarning,
  type PgTls,
} from './store/pg-ssl.js';
