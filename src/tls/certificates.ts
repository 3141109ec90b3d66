import { KeyObject, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

/** A certificate with its private key, both PEM (the key PKCS#8, as Node, OpenSSL and PostgreSQL read it). */
export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
  /** Hex, upper case, as node's X509Certificate.serialNumber reports it. */
  serialNumber: string;
}

export interface CertificateAuthority extends IssuedCertificate {
  readonly name: string;
  /** Signs a leaf certificate (test/support/signed-certificates.ts makes intermediates). */
  issue(opts: LeafOptions): Promise<IssuedCertificate>;
}

export interface LeafOptions {
  commonName: string;
  dnsNames?: string[];
  /** IP addresses for the SAN; `dnsNames` entries that are IPs go here by themselves. */
  ipAddresses?: string[];
  /** URI SANs, e.g. a SPIFFE ID `spiffe://corp/ns/etl/sa/loader`. */
  uris?: string[];
  usage?: 'server' | 'client' | 'both';
  notBefore?: Date;
  notAfter?: Date;
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x10; // positive, and no leading zero byte to be trimmed
  return Buffer.from(bytes).toString('hex');
}

function keyPem(keys: webcrypto.CryptoKeyPair): string {
  return KeyObject.from(keys.privateKey as webcrypto.CryptoKey)
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

const newKeys = () =>
  webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']) as Promise<webcrypto.CryptoKeyPair>;

const nodeSerial = (pem: string) => new NodeX509(pem).serialNumber.toUpperCase();

/**
 * A throwaway certificate authority (ECDSA P-256), for `credbroker dev --tls` and for tests.
 * Production certificates come from the operator's PKI (cert-manager, a corporate CA).
 */
export async function createCertificateAuthority(
  opts: { commonName?: string; notBefore?: Date; notAfter?: Date } = {},
): Promise<CertificateAuthority> {
  const name = opts.commonName ?? 'credbroker dev CA';
  const keys = await newKeys();
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore,
    notAfter: opts.notAfter ?? new Date(notBefore.getTime() + 365 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = cert.toString('pem') + '\n';
  return {
    name,
    certPem,
    keyPem: keyPem(keys),
    serialNumber: nodeSerial(certPem),
    issue: (leaf) => issueLeaf(cert, keys, leaf),
  };
}

async function issueLeaf(
  issuer: x509.X509Certificate,
  issuerKeys: webcrypto.CryptoKeyPair,
  opts: LeafOptions,
): Promise<IssuedCertificate> {
  const keys = await newKeys();
  const usage = opts.usage ?? 'server';
  const ekus = [
    ...(usage !== 'client' ? [x509.ExtendedKeyUsage.serverAuth] : []),
    ...(usage !== 'server' ? [x509.ExtendedKeyUsage.clientAuth] : []),
  ];
  const names: x509.JsonGeneralName[] = [];
  for (const dns of opts.dnsNames ?? [])
    names.push(isIP(dns) ? { type: 'ip', value: dns } : { type: 'dns', value: dns });
  for (const ip of opts.ipAddresses ?? []) names.push({ type: 'ip', value: ip });
  for (const uri of opts.uris ?? []) names.push({ type: 'url', value: uri });
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.commonName}`,
    issuer: issuer.subject,
    notBefore,
    notAfter: opts.notAfter ?? new Date(notBefore.getTime() + 90 * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: issuerKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension(ekus),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(issuer),
    ],
  });
  const certPem = cert.toString('pem') + '\n';
  return { certPem, keyPem: keyPem(keys), serialNumber: nodeSerial(certPem) };
}
