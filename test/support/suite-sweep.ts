import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

/**
 * The secret sweep over the whole run (issue 10): every secret the workers saw cross an HTTP
 * exchange (test/support/secret-recorder.ts) is looked for, in plaintext, in everything the suite's
 * brokers and servers wrote — the brokers' logs (test/support/broker.ts and broker-process.ts put
 * them in the sweep's directory), the shared PostgreSQL's statement log (log_statement=all) and
 * every audit file the tests made under the temporary directory during the run.
 *
 * Logs are cut into tokens at every character no secret of ours holds (our passwords, tokens,
 * JWTs and AWS keys are base64url/base64/hex with `.`, `-` and `_`), and each secret is looked up
 * among the tokens; a secret with another character is searched for as a substring.
 */
/**
 * The application_name of the tests' own admin queries (test/support/pg.ts): their lines in the
 * statement log are skipped, since a test may look a secret up on purpose (is it in a column?).
 */
export const TEST_ADMIN_APPLICATION = 'credbroker-test-admin';

const TOKEN_SPLIT = /[^A-Za-z0-9_\-.+/=~]+/;
const TOKEN_CHARS = /^[A-Za-z0-9_\-.+/=~]+$/;
const MAX_FILE_BYTES = 1 << 30;

export interface SweepResult {
  secrets: number;
  /** How many of each kind (password, secret_key, security_token, client_token, jwt …). */
  kinds: Record<string, number>;
  files: number;
  bytes: number;
  hits: string[];
}

function readSecrets(dir: string): Map<string, string> {
  const secrets = new Map<string, string>();
  const secretsDir = join(dir, 'secrets');
  if (!existsSync(secretsDir)) return secrets;
  for (const f of readdirSync(secretsDir)) {
    for (const line of readFileSync(join(secretsDir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const { kind, value } = JSON.parse(line) as { kind: string; value: string };
      secrets.set(value, kind);
    }
  }
  return secrets;
}

/** Audit files the tests wrote under the temporary directory since the run started (not inside a PostgreSQL data directory). */
function auditFiles(root: string, since: number, skip: string, depth = 0, found: string[] = []): string[] {
  if (depth > 3) return found;
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(root, { withFileTypes: true });
  } catch {
    return found;
  }
  if (entries.some((e) => e.name === 'PG_VERSION')) return found;
  for (const e of entries) {
    const path = join(root, e.name);
    if (path === skip || e.name === 'node_modules') continue;
    if (e.isDirectory()) auditFiles(path, since, skip, depth + 1, found);
    else if (e.isFile() && /audit/i.test(e.name)) {
      try {
        if (statSync(path).mtimeMs >= since) found.push(path);
      } catch {
        // gone meanwhile
      }
    }
  }
  return found;
}

export function sweepRun(dir: string, startedAt: number): SweepResult | null {
  const secrets = readSecrets(dir);
  if (!secrets.size) return null;
  const logsDir = join(dir, 'logs');
  const files = [
    ...(existsSync(logsDir) ? readdirSync(logsDir).map((f) => join(logsDir, f)) : []),
    ...(existsSync(join(dir, 'pg-statements.log')) ? [join(dir, 'pg-statements.log')] : []),
    ...auditFiles(tmpdir(), startedAt, dir),
  ];
  const odd = [...secrets.keys()].filter((s) => !TOKEN_CHARS.test(s));
  const hits: string[] = [];
  let bytes = 0;
  for (const file of files) {
    let text: string;
    try {
      if (statSync(file).size > MAX_FILE_BYTES) throw new Error(`${file} is over ${MAX_FILE_BYTES} bytes`);
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    // The tests' own admin queries (test/support/pg.ts) may look a secret up on purpose.
    if (basename(file) === 'pg-statements.log')
      text = text
        .split('\n')
        .filter((l) => !l.includes(` ${TEST_ADMIN_APPLICATION}: `))
        .join('\n');
    bytes += text.length;
    const tokens = new Set(text.split(TOKEN_SPLIT));
    for (const [value, kind] of secrets) {
      if (tokens.has(value) || (odd.includes(value) && text.includes(value))) {
        // The line it is on, with the secret masked, so the hit can be traced to who wrote it.
        const at = text.indexOf(value);
        const line = text
          .slice(text.lastIndexOf('\n', at) + 1, text.indexOf('\n', at) >>> 0)
          .replaceAll(value, '<secret>');
        hits.push(`${kind} in ${basename(file)}: ${line.slice(0, 300)}`);
      }
    }
  }
  const kinds: Record<string, number> = {};
  for (const kind of secrets.values()) kinds[kind] = (kinds[kind] ?? 0) + 1;
  return { secrets: secrets.size, kinds, files: files.length, bytes, hits };
}
