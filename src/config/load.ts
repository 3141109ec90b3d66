import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError, messageOf } from '../errors.js';
import { engines as allEngines } from '../../engines/index.js';
import type { EngineRegistry } from '../engines.js';
import { refuseInlineSecrets } from './inline-secrets.js';
import { configSchemaFor, type BrokerConfig } from './schema.js';

const REF = /\$\{(env|file):([^}]+)\}/g;

/** Replaces `${env:NAME}` and `${file:/path}` in every string of a parsed config. */
export function resolveRefs(value: unknown, path: string[] = [], env: NodeJS.ProcessEnv = process.env): unknown {
  if (typeof value === 'string') {
    return value.replace(REF, (_, kind: string, ref: string) => {
      if (kind === 'env') {
        const v = env[ref];
        if (v === undefined) throw new ConfigError(`${path.join('.')}: environment variable ${ref} is not set`);
        return v;
      }
      try {
        return readFileSync(ref, 'utf8').trim();
      } catch (err) {
        throw new ConfigError(
          `${path.join('.')}: cannot read ${ref}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
        );
      }
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => resolveRefs(v, [...path, String(i)], env));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveRefs(v, [...path, k], env)]));
  }
  return value;
}

/** Names the key and the problem for each issue, one per line. */
export function formatIssues(issues: z.core.$ZodIssue[], prefix: (string | number)[] = []): string {
  return issues
    .map((issue) => {
      const key = [...prefix, ...issue.path].map(String).join('.') || '(top level)';
      return `${key}: ${issue.message}`;
    })
    .join('\n');
}

/**
 * Parses, resolves refs and validates everything, mounts and roles by their engines' schemas;
 * a bad config throws ConfigError naming the key. `engines` are those the broker will run.
 */
export function parseConfig(
  text: string,
  env: NodeJS.ProcessEnv = process.env,
  engines: EngineRegistry = allEngines,
): BrokerConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`not valid YAML: ${messageOf(err)}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('the config must be a YAML mapping');
  refuseInlineSecrets(raw as Record<string, unknown>, engines);
  const result = configSchemaFor(engines).safeParse(resolveRefs(raw, [], env));
  if (!result.success) throw new ConfigError(formatIssues(result.error.issues));
  return result.data;
}

export function loadConfigFile(path: string, engines: EngineRegistry = allEngines): BrokerConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`);
  }
  return parseConfig(text, process.env, engines);
}
