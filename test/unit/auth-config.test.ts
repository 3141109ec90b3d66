import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { authMountSchema } from '../../src/auth/auth-config.js';
import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const PUBLIC_PEM = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const PRIVATE_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const mount = (keys: string[]) => ({ type: 'jwt', jwt_validation_pubkeys: keys, roles: {} });

/** A whole config, through the same path as `credbroker server --config`. */
function load(keys: string[]) {
  const yaml = JSON.stringify({
    store: { url: 'postgres://broker@localhost/credbroker' },
    root_token: '${env:ROOT}',
    auth: { ci: mount(keys) },
  });
  return () => parseConfig(yaml, { ROOT: 'root-token-0123456789abcdef' });
}

describe('jwt_validation_pubkeys', () => {
  it('accepts public keys in PEM', () => {
    expect(authMountSchema.safeParse(mount([PUBLIC_PEM])).success).toBe(true);
    expect(load([PUBLIC_PEM])).not.toThrow();
  });

  it.each([
    ['garbage', 'not a key at all'],
    ['a PEM with a corrupt body', PUBLIC_PEM.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!')],
    ['a truncated PEM', PUBLIC_PEM.slice(0, 60)],
    ['a certificate header around junk', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
  ])('refuses %s at load, naming the key', (_, bad) => {
    expect(load([PUBLIC_PEM, bad])).toThrow(ConfigError);
    expect(load([PUBLIC_PEM, bad])).toThrow(/^auth\.ci\.jwt_validation_pubkeys\.1: not a PEM public key/m);
  });

  it('refuses a private key: the config must never hold one', () => {
    expect(load([PRIVATE_PEM])).toThrow(/^auth\.ci\.jwt_validation_pubkeys\.0: is a private key/m);
  });
});
