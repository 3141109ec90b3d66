import { InvalidArgumentError } from 'commander';
import { isLeaseIdShape, validatePrefix } from '../leases/lease-id.js';

/** The help every command that talks to a broker ends with. */
export const ENV_HELP = `
Environment:
  CREDBROKER_ADDR   broker address (falls back to VAULT_ADDR; default http://127.0.0.1:8200)
  CREDBROKER_TOKEN  token sent as X-Vault-Token (falls back to VAULT_TOKEN)
  CREDBROKER_CACERT PEM CA file that signed the broker's https certificate (falls back to VAULT_CACERT)
  CREDBROKER_CLIENT_CERT, CREDBROKER_CLIENT_KEY
                    PEM client certificate and key, for mTLS and cert login (fall back to VAULT_CLIENT_*)
  CREDBROKER_SKIP_VERIFY=true
                    do not verify the broker's certificate (a throwaway test only; warns on every run)`;

export function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number (0-65535)');
  return n;
}

/** The same rule the server applies, checked here too: `..` would be resolved away by URL parsing. */
export function leasePrefix(value: string): string {
  try {
    validatePrefix(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (value.split('/').some((segment) => segment === '.' || segment === '..'))
    throw new InvalidArgumentError('"." and ".." segments are not allowed');
  return value;
}

export function leaseId(value: string): string {
  if (!isLeaseIdShape(value)) throw new InvalidArgumentError('expected a lease id like demo/creds/readonly/<id>');
  return value;
}

export function mountRole(value: string): string {
  if (!/^[a-z][a-z0-9_-]*\/[a-z][a-z0-9_-]*$/.test(value))
    throw new InvalidArgumentError('expected <mount>/<role>, e.g. demo/readonly');
  return value;
}

export function mountName(value: string): string {
  if (!/^[a-z][a-z0-9_-]{0,31}$/.test(value)) throw new InvalidArgumentError('expected a mount name, e.g. demo');
  return value;
}

export const print = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

export const warn = (warnings: string[] | undefined): void => {
  for (const warning of warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
};
