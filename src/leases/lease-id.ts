import { leaseIdPattern } from '../engine-paths.js';
import { InvalidRequest } from '../errors.js';
import { randomLeaseSuffix } from '../random.js';

const LEASE_ID = leaseIdPattern();
const PREFIX = /^[A-Za-z0-9_/-]{0,200}$/;

/** Vault's shape: `<mount>/<path>/<role>/<random>` (path `creds`, or one an engine adds), so a prefix names a mount, a role or one lease. */
export function newLeaseId(mount: string, path: string, role: string): string {
  return `${mount}/${path}/${role}/${randomLeaseSuffix()}`;
}

/** True when the text could be a lease id at all; anything else is simply not found. */
export function isLeaseIdShape(id: string): boolean {
  return LEASE_ID.test(id);
}

/** Checks a prefix from a URL: plain path characters only, no empty or dot segments. */
export function validatePrefix(prefix: string): string {
  if (!PREFIX.test(prefix) || prefix.split('/').some((seg, i, all) => seg === '' && i > 0 && i < all.length - 1)) {
    throw new InvalidRequest('invalid lease prefix: use letters, digits, "_", "-" and "/" between non-empty segments');
  }
  return prefix;
}
