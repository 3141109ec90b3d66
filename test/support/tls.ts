import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch } from 'undici';
import { createCertificateAuthority, type CertificateAuthority, type LeafOptions } from '../../src/tls/certificates.js';

export interface CertFiles {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
  serialNumber: string;
}

export interface TlsFixture {
  dir: string;
  ca: CertificateAuthority;
  caFile: string;
  /** The server certificate for 127.0.0.1 and localhost. */
  server: CertFiles;
  /** listen.tls for a test broker. */
  listen: { cert_file: string; key_file: string };
  /** A certificate signed by this CA, written to files named `name`. */
  issue(name: string, opts: LeafOptions): Promise<CertFiles>;
}

function write(
  dir: string,
  name: string,
  issued: { certPem: string; keyPem: string; serialNumber: string },
): CertFiles {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  writeFileSync(certFile, issued.certPem);
  writeFileSync(keyFile, issued.keyPem, { mode: 0o600 });
  return { certFile, keyFile, ...issued };
}

/** A CA and a server certificate in a new temp dir (certificates from src/tls/certificates.ts, 50 ms). */
export async function tlsFixture(commonName = 'credbroker test CA'): Promise<TlsFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-tls-'));
  const ca = await createCertificateAuthority({ commonName });
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.certPem);
  const issue = async (name: string, opts: LeafOptions) => write(dir, name, await ca.issue(opts));
  const server = await issue('server', { commonName: 'localhost', dnsNames: ['localhost', '127.0.0.1'] });
  return { dir, ca, caFile, server, listen: { cert_file: server.certFile, key_file: server.keyFile }, issue };
}

/** fetch over https trusting `ca`, optionally presenting a client certificate. */
export function tlsFetch(ca: string | undefined, client?: { certPem: string; keyPem: string }) {
  const dispatcher = new Agent({
    connect: { ...(ca ? { ca } : {}), ...(client ? { cert: client.certPem, key: client.keyPem } : {}) },
  });
  return (url: string, init: Parameters<typeof fetch>[1] = {}) => fetch(url, { ...init, dispatcher });
}
