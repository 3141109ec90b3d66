import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';

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

/**
 * What a request's socket offers: a TLSSocket, or the stream the listener wraps it in (see
 * src/api/list-method.ts), which forwards `encrypted` and the peer certificate methods.
 */
export type PeerSocket = { encrypted?: boolean } & Partial<Pick<TLSSocket, 'getPeerCertificate'>>;

/** The certificates the client of `socket` presented. */
export function peerCertificatesOf(socket: PeerSocket): PeerCertificates {
  if (socket.encrypted !== true || !socket.getPeerCertificate) return { tls: false, chain: [] };
  // Only getPeerCertificate(true): on node 20, calling getPeerX509Certificate() first leaves it
  // without the issuer chain (found by the intermediate test in test/integration/cert-auth.test.ts).
  const peer = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  if (!peer?.raw) return { tls: true, chain: [] };
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  // Node links each certificate to its issuer among those sent; a self-signed one links to itself.
  for (let link: DetailedPeerCertificate | undefined = peer; link?.raw && chain.length < MAX_CHAIN;) {
    const cert = new X509Certificate(link.raw);
    if (seen.has(cert.fingerprint256)) break;
    seen.add(cert.fingerprint256);
    chain.push(cert);
    link = link.issuerCertificate;
  }
  return { tls: true, chain };
}
