import type { CredentialEnvelope } from '../engines.js';
import { formatCredential } from './credential-format.js';

/** Reads back the `NAME=value` lines the env format writes: bare values, or single-quoted ones with `'\''` for a quote. */
export function parseEnvLines(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq === -1) break;
    const name = text.slice(i, eq).trim();
    let value = '';
    i = eq + 1;
    if (text[i] === "'") {
      for (;;) {
        const close = text.indexOf("'", i + 1);
        if (close === -1) throw new Error(`unterminated value for ${name} in the env format`);
        value += text.slice(i + 1, close);
        i = close + 1;
        if (text.startsWith("\\''", i)) {
          value += "'";
          i += 2;
          continue;
        }
        break;
      }
    } else {
      const end = text.indexOf('\n', i);
      value = text.slice(i, end === -1 ? text.length : end);
      i = end === -1 ? text.length : end;
    }
    if (name) env[name] = value;
    while (text[i] === '\n') i++;
  }
  return env;
}

/** What the env format adds about the lease itself, not the credential: left out of a child's environment. */
const LEASE_VARIABLES = new Set(['CREDBROKER_LEASE_ID', 'CREDBROKER_LEASE_DURATION']);

/**
 * A credential as environment variables, named as the env format names them (the engine's own
 * mapping: PGUSER…, DATABASE_URL, AWS_ACCESS_KEY_ID…), each with `prefix` in front.
 */
export function credentialEnv(envelope: CredentialEnvelope, prefix = ''): Record<string, string> {
  const vars = parseEnvLines(formatCredential(envelope, 'env'));
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(vars)) if (!LEASE_VARIABLES.has(name)) env[`${prefix}${name}`] = value;
  return env;
}
