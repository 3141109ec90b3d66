import { pino, type Logger } from 'pino';

/**
 * The process logger. Nothing secret is logged on purpose; the redaction list is a second
 * line of defence should a secret-bearing object ever reach a log call.
 */
export function createLogger(level: string = process.env.CREDBROKER_LOG_LEVEL ?? 'info', destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: undefined,
    redact: {
      paths: ['password', '*.password', 'secret', '*.secret', 'token', '*.token', 'data', '*.data', 'headers', '*.headers', 'body', '*.body'],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options, pino.destination({ dest: 2, sync: false }));
}
