import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/** HKDF's `info`: a key derived for response wrapping is good for nothing else. */
const HKDF_INFO = 'credbroker response wrapping';
const SALT_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A wrapped answer as the store keeps it: nothing here, nor in the row around it, yields the key. */
export interface Sealed {
  salt: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

/** The AES-256 key for one row: HKDF-SHA256 over the wrapping token, with the row's own random salt. */
function keyFor(token: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(token, 'utf8'), salt, HKDF_INFO, 32));
}

/**
 * Encrypts `plaintext` with AES-256-GCM under a key only `token` gives. `aad` (the row's token
 * hash) is authenticated, not encrypted: a ciphertext moved to another row does not open there.
 * @example const sealed = seal(token, Buffer.from(json), tokenHash)
 */
export function seal(token: string, plaintext: Buffer, aad: Buffer): Sealed {
  const salt = randomBytes(SALT_BYTES);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', keyFor(token, salt), iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { salt, iv, ciphertext, tag: cipher.getAuthTag() };
}

/** The plaintext of a sealed answer; throws when the token, the AAD or any stored byte is not the one sealed with. */
export function open(token: string, sealed: Sealed, aad: Buffer): Buffer {
  if (sealed.iv.length !== IV_BYTES || sealed.tag.length !== TAG_BYTES || sealed.salt.length !== SALT_BYTES)
    throw new Error('sealed answer has a malformed salt, iv or tag');
  const decipher = createDecipheriv('aes-256-gcm', keyFor(token, sealed.salt), sealed.iv, {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.tag);
  return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]);
}
