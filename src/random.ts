import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz';
const POOL_SIZE = 8192;

/**
 * CSPRNG bytes served from a pooled buffer: one randomBytes call per 8 KiB instead of several
 * per request. Every byte is handed out once and never reused.
 */
let pool = randomBytes(POOL_SIZE);
let offset = 0;

export function secureBytes(n: number): Buffer {
  if (n > POOL_SIZE) return randomBytes(n);
  if (offset + n > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + n));
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}

/** Uniform characters, rejecting bytes past the alphabet's last whole multiple. */
function randomFrom(alphabet: string, length: number): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    for (const byte of secureBytes(length * 2)) {
      if (byte < limit) out += alphabet[byte % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/** Vault's lease suffix shape: 24 base62 characters (~143 bits). */
export const randomLeaseSuffix = (): string => randomFrom(BASE62, 24);

/** Lower-case so generated names never need case-sensitive quoting to be typed by hand. */
export const randomName = (length: number): string => randomFrom(BASE36, length);

/** A 256-bit secret, URL- and pgpass-safe (base64url has no ':' '\\' '@' or quotes). */
export const randomSecret = (): string => secureBytes(32).toString('base64url');
