import { appendFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { inject } from 'vitest';

/**
 * A setup file of the integration project: records every secret that crosses an HTTP exchange in
 * this worker — the answers of every in-process server (brokers first), and every exchange made
 * with fetch (brokers in child processes) — for the sweep at the end of the run
 * (test/support/reliability-run.ts), which looks for each in every log the suite wrote.
 */
const SECRET_KEYS = new Set([
  'password',
  'secret_key',
  'secret_access_key',
  'secretaccesskey',
  'security_token',
  'session_token',
  'sessiontoken',
  'client_token',
  'token',
  'jwt',
  'secret_id',
]);
const SECRET_HEADERS = ['x-vault-token', 'authorization'];
const MIN_LENGTH = 12;
/** An audit HMAC (src/audit/hmac.ts) under a secret's key, as sys/broker/audit answers: the hash, not the secret. */
const AUDIT_HMAC = /^hmac-sha256:[0-9a-f]{64}$/;

const dir = inject('sweepDir');
const file = dir ? join(dir, 'secrets', `${process.pid}.jsonl`) : null;
if (file) mkdirSync(join(dir!, 'secrets'), { recursive: true });
const seen = new Set<string>();

export function recordSecret(kind: string, value: unknown): void {
  if (!file || typeof value !== 'string' || value.length < MIN_LENGTH || seen.has(value) || AUDIT_HMAC.test(value))
    return;
  seen.add(value);
  appendFileSync(file, `${JSON.stringify({ kind, value })}\n`);
}

function walk(value: unknown, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== 'object') return;
  for (const [key, v] of Object.entries(value)) {
    if (typeof v === 'string' && SECRET_KEYS.has(key.toLowerCase())) recordSecret(key.toLowerCase(), v);
    else walk(v, depth + 1);
  }
}

function fromBody(text: string): void {
  if (!text || (text[0] !== '{' && text[0] !== '[')) return;
  try {
    walk(JSON.parse(text));
  } catch {
    // not JSON: nothing structured to record
  }
}

function fromHeader(name: string, value: unknown): void {
  if (typeof value !== 'string' || !SECRET_HEADERS.includes(name.toLowerCase())) return;
  recordSecret(name.toLowerCase(), value.replace(/^Bearer\s+/i, ''));
}

if (file) {
  // Every in-process server's answers, whatever client asked (fetch, raw sockets, node-vault).
  const { write, end } = http.ServerResponse.prototype;
  const chunksOf = new WeakMap<http.ServerResponse, Buffer[]>();
  const keep = (res: http.ServerResponse, chunk: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const chunks = chunksOf.get(res) ?? [];
    if (chunks.length < 64) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    chunksOf.set(res, chunks);
  };
  http.ServerResponse.prototype.write = function (this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
    keep(this, chunk);
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof write;
  http.ServerResponse.prototype.end = function (this: http.ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    keep(this, chunk);
    try {
      for (const [name, value] of Object.entries(this.req?.headers ?? {})) fromHeader(name, value);
      fromBody(Buffer.concat(chunksOf.get(this) ?? []).toString('utf8'));
    } catch {
      // recording must never change what the server does
    }
    return (end as (...a: unknown[]) => http.ServerResponse).call(this, chunk, ...rest);
  } as typeof end;

  // Exchanges with brokers in child processes.
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    try {
      new Headers(init?.headers).forEach((value, name) => fromHeader(name, value));
      if (typeof init?.body === 'string') fromBody(init.body);
    } catch {
      // as above
    }
    const res = await realFetch(input, init);
    if ((res.headers.get('content-type') ?? '').includes('json')) {
      res
        .clone()
        .text()
        .then(fromBody, () => undefined);
    }
    return res;
  };
}

/** A file in the sweep's log directory for a broker's output, or null when no sweep runs. */
export function sweepLogPath(label: string): string | null {
  if (!dir) return null;
  mkdirSync(join(dir, 'logs'), { recursive: true });
  return join(
    dir,
    'logs',
    `${label.replace(/[^a-z0-9-]+/gi, '-')}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}.log`,
  );
}
