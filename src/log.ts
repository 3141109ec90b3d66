import { pino, type Logger, type LoggerOptions } from 'pino';
import { engines as allEngines } from '../engines/index.js';
import type { EngineRegistry } from './engines.js';

/** What the broker itself must never log: its tokens, and any body, header or credential payload. */
const BROKER_SECRET_KEYS = ['secret', 'token', 'data', 'headers', 'body'];

/** A pino path for a key, bracketed where the key is not a plain identifier. */
const pathOf = (key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? key : `[${JSON.stringify(key)}]`);

/**
 * The redaction for a broker running `engines`: the broker's own keys and every secret field the
 * engines declare (mount, role and credential), at the top level and one level down.
 */
export function logRedaction(engines: EngineRegistry): NonNullable<LoggerOptions['redact']> {
  const declared = Object.values(engines).flatMap(({ secrets }) => [
    ...Object.keys(secrets.mount),
    ...Object.keys(secrets.role ?? {}),
    ...secrets.credential,
  ]);
  const keys = [...new Set([...BROKER_SECRET_KEYS, ...declared])].map(pathOf);
  return { paths: keys.flatMap((key) => [key, `*${key.startsWith('[') ? '' : '.'}${key}`]), censor: '[redacted]' };
}

/**
 * The process logger. Nothing secret is logged on purpose; the redaction is a second line of
 * defence should a secret-bearing object ever reach a log call.
 */
export function createLogger(
  level: string = process.env.CREDBROKER_LOG_LEVEL ?? 'info',
  destination?: NodeJS.WritableStream,
  engines: EngineRegistry = allEngines,
): Logger {
  const options = { level, base: undefined, redact: logRedaction(engines) };
  return destination
    ? pino(options, destination as pino.DestinationStream)
    : pino(options, pino.destination({ dest: 2, sync: false }));
}

/** `log` redacting, besides, the secret fields of `engines` (a broker started with engines its logger was not made for). */
export function redactingFor(log: Logger, engines: EngineRegistry): Logger {
  return log.child({}, { redact: logRedaction(engines) });
}
