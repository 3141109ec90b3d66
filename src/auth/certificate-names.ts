import type { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';

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
  const parsed = new x509.X509Certificate(cert.raw);
  const names = parsed.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const ofType = (type: x509.GeneralNameType) => names.filter((n) => n.type === type).map((n) => n.value);
  return {
    commonNames: parsed.subjectName.getField('CN'),
    dnsSans: ofType('dns'),
    emailSans: ofType('email'),
    uriSans: ofType('url'),
    subjectKeyId: hexPairs(parsed.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId),
    authorityKeyId: hexPairs(parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId),
  };
}
