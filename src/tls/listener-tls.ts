import { readFileSync } from 'node:fs';
import { constants, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContextOptions, type TlsOptions } from 'node:tls';
import { z } from 'zod';
import { ConfigError, messageOf } from '../errors.js';

export const listenTlsSchema = z
  .object({
    /** PEM certificate chain: the server's certificate first, then any intermediates. */
    cert_file: z.string().min(1),
    key_file: z.string().min(1),
    /**
     * PEM CA bundle: every client must then present a certificate it signed (mTLS on the whole
     * listener). Without it a client certificate is still asked for, optional, and checked only by
     * the `cert` auth method against its role's CA.
     */
    client_ca_file: z.string().min(1).optional(),
    min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  })
  .strict();

export type ListenTlsConfig = z.infer<typeof listenTlsSchema>;

function readPem(config: ListenTlsConfig, key: 'cert_file' | 'key_file' | 'client_ca_file'): string {
  const path = config[key]!;
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `listen.tls.${key}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
    );
  }
}

/** The certificate, key and client CA of the listener, read now and checked to belong together. */
export function loadListenerCredentials(config: ListenTlsConfig): SecureContextOptions & { serialNumber: string } {
  const cert = readPem(config, 'cert_file');
  const key = readPem(config, 'key_file');
  const ca = config.client_ca_file ? readPem(config, 'client_ca_file') : undefined;
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigError(`listen.tls.cert_file: ${config.cert_file} is not a PEM certificate (${messageOf(err)})`);
  }
  try {
    createSecureContext({ cert, key, ca, minVersion: config.min_version });
  } catch (err) {
    const reason = messageOf(err);
    throw new ConfigError(
      /key values mismatch/.test(reason)
        ? `listen.tls: the key in ${config.key_file} does not belong to the certificate in ${config.cert_file}`
        : `listen.tls: cannot use ${config.cert_file} with ${config.key_file}${ca ? ` and ${config.client_ca_file}` : ''}: ${reason}`,
    );
  }
  return {
    cert,
    key,
    ca,
    minVersion: config.min_version,
    // No session resumption: a resumed session keeps the client's certificate but not the chain it
    // sent, so a cert login through an intermediate would fail on every reconnection. (Node keeps
    // no server-side session cache, so without tickets every connection makes a full handshake.)
    secureOptions: constants.SSL_OP_NO_TICKET,
    serialNumber: leaf.serialNumber,
  };
}

/** The options of an https server for `config`: client certificates are asked for, and required only with client_ca_file. */
export function serverTlsOptions(config: ListenTlsConfig): TlsOptions & { serialNumber: string } {
  return {
    ...loadListenerCredentials(config),
    requestCert: true,
    rejectUnauthorized: Boolean(config.client_ca_file),
  };
}

/** Whether a plain-HTTP listener on `address` stays on this machine. */
export function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || /^127\./.test(address) || address === '::ffff:127.0.0.1';
}
