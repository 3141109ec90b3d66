import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { secureBytes } from '../../src/engine-kit.js';

/**
 * A SCRAM-SHA-256 verifier in PostgreSQL's stored form (`rolpassword`), computed here so the
 * plaintext password never reaches the target or its statement log.
 *
 * The iteration count only slows down guessing a weak password; ours are 256-bit random, so a low
 * count costs no security and saves ~6 ms of PBKDF2 per role on the target (see DESIGN.md).
 * @example scramVerifier('secret', 4096) // 'SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>'
 */
export function scramVerifier(password: string, iterations: number, salt: Buffer = secureBytes(16)): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
