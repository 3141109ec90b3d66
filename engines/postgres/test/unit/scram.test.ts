import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { scramVerifier } from '../../scram.js';

/**
 * RFC 7677 section 3, the SCRAM-SHA-256 example exchange: user "user", password "pencil".
 * The RFC gives the salt, the iteration count, the client's proof (p=) and the server's
 * signature (v=) over the AuthMessage; StoredKey and ServerKey are checked against those.
 */
const RFC = {
  password: 'pencil',
  salt: 'W22ZaJ0SNY7soEsUEjb6gQ==',
  iterations: 4096,
  clientFirstBare: 'n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinalWithoutProof: 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  clientProof: 'dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverSignature: '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};
const AUTH_MESSAGE = `${RFC.clientFirstBare},${RFC.serverFirst},${RFC.clientFinalWithoutProof}`;

/** The keys of the RFC's exchange, as PostgreSQL stores them in pg_authid.rolpassword. */
const STORED_KEY = 'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=';
const SERVER_KEY = 'wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=';

const VERIFIER_SHAPE = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2}):([A-Za-z0-9+/]+={0,2})$/;

function parts(verifier: string) {
  const m = VERIFIER_SHAPE.exec(verifier);
  if (!m) throw new Error(`not a SCRAM-SHA-256 verifier: ${verifier}`);
  return { iterations: Number(m[1]), salt: m[2]!, storedKey: m[3]!, serverKey: m[4]! };
}

describe('scramVerifier', () => {
  const verifier = scramVerifier(RFC.password, RFC.iterations, Buffer.from(RFC.salt, 'base64'));

  it("writes PostgreSQL's stored form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", () => {
    expect(verifier).toBe(`SCRAM-SHA-256$4096:${RFC.salt}$${STORED_KEY}:${SERVER_KEY}`);
  });

  it("has a StoredKey that verifies the client proof of RFC 7677's example exchange", () => {
    const { storedKey } = parts(verifier);
    // What the server does on login: ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) must be StoredKey.
    const clientSignature = createHmac('sha256', Buffer.from(storedKey, 'base64')).update(AUTH_MESSAGE).digest();
    const proof = Buffer.from(RFC.clientProof, 'base64');
    const clientKey = Buffer.from(proof.map((byte, i) => byte ^ clientSignature[i]!));
    expect(createHash('sha256').update(clientKey).digest('base64')).toBe(storedKey);
  });

  it("has a ServerKey that produces RFC 7677's server signature", () => {
    const { serverKey } = parts(verifier);
    expect(createHmac('sha256', Buffer.from(serverKey, 'base64')).update(AUTH_MESSAGE).digest('base64')).toBe(
      RFC.serverSignature,
    );
  });

  it('uses a fresh random 16-byte salt for every verifier by default', () => {
    const a = parts(scramVerifier('secret', 16));
    const b = parts(scramVerifier('secret', 16));
    expect(a.iterations).toBe(16);
    expect(Buffer.from(a.salt, 'base64')).toHaveLength(16);
    expect(a.salt).not.toBe(b.salt);
    expect(a.storedKey).not.toBe(b.storedKey);
  });

  it('normalizes the password with NFKC, as SASLprep does, so equivalent spellings give one verifier', () => {
    const salt = Buffer.from(RFC.salt, 'base64');
    // U+2168 ROMAN NUMERAL NINE is compatibility-equivalent to "IX".
    expect(scramVerifier('\u2168', 16, salt)).toBe(scramVerifier('IX', 16, salt));
    expect(scramVerifier('IX', 16, salt)).not.toBe(scramVerifier('ix', 16, salt));
  });
});
