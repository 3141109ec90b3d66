import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket, type DetailedPeerCertificate } from 'node:tls';

/** What a connection says of its client, for a cert login. */
export interface PeerCertificates {
  /** False on plain http: no certificate can have come. */
  tls: boolean;
  /**
   * The client's certificate first, then the others it sent (its chain); empty when it sent none.
   * Not verified by this: the TLS handshake proved only that the client holds the first one's key.
   */
  chain: X509Certificate[];
}

/** More certificates than any real chain has: the rest are ignored. */
const MAX_CHAIN = 10;

/** The certificates the client of `socket` presented. */
export function peerCertificatesOf(socket: Socket): PeerCertificates {
  if (!(socket instanceof TLSSocket)) return { tls: false, chain: [] };
  const leaf = socket.getPeerX509Certificate();
  if (!leaf) return { tls: true, chain: [] };
  const chain = [leaf];
  const seen = new Set([leaf.fingerprint256]);
  // Node links each certificate to its issuer among those sent; a self-signed one links to itself.
  let link: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true).issuerCertificate;
  while (link?.raw && chain.length < MAX_CHAIN) {
    const cert = new X509Certificate(link.raw);
    if (seen.has(cert.fingerprint256)) break;
    seen.add(cert.fingerprint256);
    chain.push(cert);
    link = link.issuerCertificate;
  }
  return { tls: true, chain };
}
