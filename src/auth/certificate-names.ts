import type { X509Certificate } from 'node:crypto';
import { createRequire } from 'node:module';

type X509Module = typeof import('@peculiar/x509');
let x509Module: X509Module | undefined;

/**
 * @peculiar/x509, loaded on first use: it costs ~130 ms and ~15 MB, which a broker without a cert
 * auth mount (most of them) should not pay at start. A cert mount loads it when it is made.
 */
export function certificateParser(): X509Module {
  return (x509Module ??= createRequire(import.meta.url)('@peculiar/x509') as X509Module);
}

/** What a cert login binds and records: the subject's common names, the SANs and the key ids. */
export interface CertificateNames {
  commonNames: string[];
  dnsSans: string[];
  emailSans: string[];
  uriSans: string[];
  /** Lower-case hex pairs joined by ":", as Vault's cert metadata writes them; '' when absent. */
  subjectKeyId: string;
  authorityKeyId: string;
}

const hexPairs = (hex: string | undefined) => (hex ? (hex.toLowerCase().match(/../g) ?? []).join(':') : '');

/**
 * Reads the names with @peculiar/x509's parser: node's X509Certificate gives the SANs only as one
 * escaped string and has no key identifiers. Throws on a certificate it cannot read.
 */
export function certificateNames(cert: X509Certificate): CertificateNames {
  const x509 = certificateParser();
  const parsed = new x509.X509Certificate(cert.raw);
  const names = parsed.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const ofType = (type: import('@peculiar/x509').GeneralNameType) =>
    names.filter((n) => n.type === type).map((n) => n.value);
  return {
    commonNames: parsed.subjectName.getField('CN'),
    dnsSans: ofType('dns'),
    emailSans: ofType('email'),
    uriSans: ofType('url'),
    subjectKeyId: hexPairs(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId),
    authorityKeyId: hexPairs(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId),
  };
}
