import { createPrivateKey, KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * Certificates with what src/tls/certificates.ts does not offer (an intermediate CA, a non-CA
 * with the certSign usage), signed with @peculiar/x509, for the cert auth tests.
 */
const DAY = 86_400_000;
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate signed by `issuer`: a CA (keyCertSign), or a client leaf (clientAuth). */
export interface Signed {
  certPem: string;
  /** PKCS#8, for a TLS client. */
  keyPem: string;
  keys: webcrypto.CryptoKeyPair;
}

export function importKey(keyPem: string): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
}

export async function sign(
  issuer: { certPem: string; signingKey: webcrypto.CryptoKey },
  opts: {
    commonName: string;
    ca?: boolean;
    /** The keyCertSign key usage; by default only a CA has it. */
    certSign?: boolean;
    uris?: string[];
    notBefore?: Date;
    notAfter?: Date;
  },
): Promise<Signed> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const names = (opts.uris ?? []).map((value) => ({ type: 'url' as const, value }));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '1a' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
    subject: `CN=${opts.commonName}`,
    issuer: issuerCert.subject,
    notBefore: opts.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 30 * DAY),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: issuer.signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
      new x509.KeyUsagesExtension(
        (opts.certSign ?? opts.ca) ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      ...(opts.ca ? [] : [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])]),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(issuerCert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = KeyObject.from(keys.privateKey as webcrypto.CryptoKey)
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
  return { certPem: cert.toString('pem') + '\n', keyPem, keys };
}

export const asIssuer = (s: Signed) => ({ certPem: s.certPem, signingKey: s.keys.privateKey });
