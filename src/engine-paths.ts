import { engines as allEngines } from '../engines/index.js';
import type { EngineRegistry } from './engines.js';

const WORD = /^[a-z][a-z0-9_-]{0,31}$/;
/** Paths under a mount the broker itself answers (`<mount>/roles` discovery, `<mount>/config/verify`). */
const RESERVED = new Set(['roles', 'config']);

/** The paths leases are issued on: Vault's `creds`, then each engine's own (AWS's `sts`), in registry order. */
export function issuePaths(engines: EngineRegistry = allEngines): string[] {
  const paths = ['creds', ...Object.values(engines).flatMap((e) => e.paths ?? [])];
  for (const path of paths) {
    if (!WORD.test(path)) throw new Error(`engine path "${path}" must be a lower-case word`);
    if (RESERVED.has(path))
      throw new Error(`engine path "${path}" is reserved: the broker answers <mount>/${path}/ itself`);
  }
  return [...new Set(paths)];
}

/** `creds|sts`: the paths as one regex alternation (each is a plain word, nothing to escape). */
const alternation = (engines: EngineRegistry) => issuePaths(engines).join('|');

/** The issue route after `/v1/`: `<mount>/<path>/<role>`, capturing all three. */
export function issueRoutePattern(engines: EngineRegistry = allEngines): RegExp {
  return new RegExp(`^([^/]+)\\/(${alternation(engines)})\\/([^/]+)$`);
}

/** A whole lease id, Vault's shape: `<mount>/<path>/<role>/<random>`. */
export function leaseIdPattern(engines: EngineRegistry = allEngines): RegExp {
  return new RegExp(
    `^[a-z][a-z0-9_-]{0,31}\\/(?:${alternation(engines)})\\/[a-z][a-z0-9_-]{0,31}\\/[A-Za-z0-9]{1,64}$`,
  );
}
