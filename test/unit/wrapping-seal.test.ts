import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { open, seal, type Sealed } from '../../src/wrapping/seal.js';
import { parseWrapTtl } from '../../src/wrapping/wrap-ttl.js';

const TOKEN = 'cbw.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const aadOf = (token: string) => createHash('sha256').update(token).digest();
const PLAINTEXT = Buffer.from(JSON.stringify({ data: { username: 'u', password: 'p4ssw0rd-that-must-not-show' } }));

/** A copy of `sealed` with one bit of one field flipped. */
function flipped(sealed: Sealed, field: keyof Sealed): Sealed {
  const copy = Buffer.from(sealed[field]);
  copy[copy.length - 1]! ^= 1;
  return { ...sealed, [field]: copy };
}

describe('the seal of a wrapped answer', () => {
  it('opens with its token and AAD, to the exact plaintext', () => {
    const sealed = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    expect(open(TOKEN, sealed, aadOf(TOKEN))).toEqual(PLAINTEXT);
  });

  it('holds neither the plaintext nor the token in any stored field', () => {
    const sealed = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    const stored = Buffer.concat([sealed.salt, sealed.iv, sealed.ciphertext, sealed.tag]);
    expect(stored.includes(Buffer.from('p4ssw0rd-that-must-not-show'))).toBe(false);
    expect(stored.includes(Buffer.from(TOKEN))).toBe(false);
    expect(sealed.ciphertext.length).toBe(PLAINTEXT.length);
  });

  it('does not open with another token, even one a character apart, nor with what the store keeps', () => {
    const sealed = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    expect(() => open(`${TOKEN.slice(0, -1)}B`, sealed, aadOf(TOKEN))).toThrow();
    // The store keeps the token's hash: as key material it opens nothing.
    expect(() => open(aadOf(TOKEN).toString('hex'), sealed, aadOf(TOKEN))).toThrow();
    expect(() => open(aadOf(TOKEN).toString('base64'), sealed, aadOf(TOKEN))).toThrow();
  });

  it('does not open under another row’s AAD', () => {
    const sealed = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    expect(() => open(TOKEN, sealed, aadOf('cbw.other'))).toThrow();
  });

  it.each(['salt', 'iv', 'ciphertext', 'tag'] as const)('refuses a sealed answer whose %s was changed', (field) => {
    const sealed = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    expect(() => open(TOKEN, flipped(sealed, field), aadOf(TOKEN))).toThrow();
  });

  it('draws a new salt and iv every time: the same answer twice gives unrelated ciphertexts', () => {
    const a = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    const b = seal(TOKEN, PLAINTEXT, aadOf(TOKEN));
    expect(a.salt.equals(b.salt)).toBe(false);
    expect(a.iv.equals(b.iv)).toBe(false);
    expect(a.ciphertext.equals(b.ciphertext)).toBe(false);
  });
});

describe('X-Vault-Wrap-TTL', () => {
  it.each([
    ['60', 60],
    ['60s', 60],
    ['5m', 300],
    ['1h30m', 5400],
    [' 90 ', 90],
    ['1', 1],
    ['720h', 2_592_000],
  ])('%j is %i seconds', (header, seconds) => {
    expect(parseWrapTtl(header)).toBe(seconds);
  });

  it.each([undefined, '', '  '])('%j asks for no wrapping', (header) => {
    expect(parseWrapTtl(header)).toBeUndefined();
  });

  it.each(['0', '0s', '500ms', '-5', '-1m', 'abc', '5 m', '1y', '60, 60', '721h', '2592001', '99999999999999'])(
    '%j is refused as a client mistake',
    (header) => {
      expect(() => parseWrapTtl(header)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_REQUEST' }));
    },
  );
});
