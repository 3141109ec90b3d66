import { createHmac } from 'node:crypto';

/**
 * Vault's shape for a hashed audit field: equal inputs give equal outputs under one key, so an
 * operator can find a known secret in the log (`credbroker audit hash`) without the log holding it.
 */
export function hmacField(key: string, value: string): string {
  return `hmac-sha256:${createHmac('sha256', key).update(value, 'utf8').digest('hex')}`;
}
