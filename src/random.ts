import { randomBytes, randomInt } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz';

function randomFrom(alphabet: string, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

/** Vault's lease suffix shape: 24 base62 characters (~143 bits). */
export const randomLeaseSuffix = (): string => randomFrom(BASE62, 24);

/** Lower-case so generated names never need case-sensitive quoting to be typed by hand. */
export const randomName = (length: number): string => randomFrom(BASE36, length);

/** A 256-bit secret, URL- and pgpass-safe (base64url has no ':' '\\' '@' or quotes). */
export const randomSecret = (): string => randomBytes(32).toString('base64url');
