import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { createCertificateAuthority } from '../tls/certificates.js';
import type { ListenTlsConfig } from '../tls/listener-tls.js';

export interface DevTls {
  /** The listener's config. */
  listen: ListenTlsConfig;
  /** The CA a client must trust: what CREDBROKER_CACERT names. */
  caFile: string;
}

const RENEW_BEFORE_MS = 7 * 86_400_000;

/** Whether `certFile` exists, names `host` and lasts another week. */
function usable(certFile: string, host: string): boolean {
  if (!existsSync(certFile)) return false;
  const cert = new X509Certificate(readFileSync(certFile));
  const names = cert.subjectAltName ?? '';
  return new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_MS && names.includes(host);
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 and localhost (and `address`) in `dir`:
 * made on first use, kept while they last, so a --data dir keeps its CREDBROKER_CACERT across restarts.
 */
export async function devCertificates(dir: string, address: string): Promise<DevTls> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, 'ca.pem');
  const certFile = join(dir, 'server.pem');
  const keyFile = join(dir, 'server-key.pem');
  const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address;
  if (!usable(caFile, '') || !usable(certFile, host)) {
    const ca = await createCertificateAuthority({ commonName: 'credbroker dev CA (throwaway)' });
    const server = await ca.issue({
      commonName: 'credbroker dev',
      dnsNames: [...new Set(['localhost', '127.0.0.1', '::1', host])],
    });
    // The CA's key is never written: nothing else is ever signed with it.
    await writeFile(caFile, ca.certPem, { mode: 0o644 });
    await writeFile(certFile, server.certPem, { mode: 0o644 });
    await writeFile(keyFile, server.keyPem, { mode: 0o600 });
  }
  return { listen: { cert_file: certFile, key_file: keyFile, min_version: 'TLSv1.2' }, caFile };
}
