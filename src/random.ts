import { randomBytes } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Uniform characters from one randomBytes call, rejecting bytes past the alphabet's last multiple. */
function randomFrom(alphabet: string, length: number): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
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
export const randomSecret = (): string => randomBytes(32).toString('base64url');
