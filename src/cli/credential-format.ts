import { engines as allEngines } from '../../engines/index.js';
import type { CredentialEnvelope, CredentialFormats, EngineRegistry, FormatOptions } from '../engines.js';

/**
 * Renders an issued credential envelope for files and shells. `json` and `env` take any
 * credential; every other format is one an engine declares for its own (`formats.files`).
 */
export type CredentialFormat = string;

const formatsOf = (engines: EngineRegistry): CredentialFormats[] =>
  Object.values(engines).flatMap((e) => (e.formats ? [e.formats] : []));

/** Every format name, for `--format`: the two any credential has, then each engine's own, in registry order. */
export function credentialFormats(engines: EngineRegistry = allEngines): string[] {
  return [...new Set(['json', 'env', ...formatsOf(engines).flatMap((f) => Object.keys(f.files ?? {}))])];
}
export const CREDENTIAL_FORMATS: CredentialFormat[] = credentialFormats();

const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

/**
 * The formats of the engine whose credential this looks like: the one whose env names cover most
 * of its fields (the CLI sees only the envelope, not which engine issued it). None when none does.
 */
function formatsFor(data: Record<string, unknown>, engines: EngineRegistry): CredentialFormats | undefined {
  let best: { formats?: CredentialFormats; hits: number } = { hits: 0 };
  for (const formats of formatsOf(engines)) {
    const hits = Object.keys(data).filter((key) => Object.hasOwn(formats.env, key)).length;
    if (hits > best.hits) best = { formats, hits };
  }
  return best.formats;
}

export function formatCredential(
  envelope: CredentialEnvelope,
  format: CredentialFormat,
  opts: FormatOptions = {},
  engines: EngineRegistry = allEngines,
): string {
  const data = envelope.data ?? {};
  if (format === 'json') return `${JSON.stringify(envelope, null, 2)}\n`;
  if (format === 'env') {
    const formats = formatsFor(data, engines);
    const names = formats?.env ?? {};
    const lines = [
      `CREDBROKER_LEASE_ID=${shellQuote(envelope.lease_id)}`,
      `CREDBROKER_LEASE_DURATION=${envelope.lease_duration}`,
    ];
    for (const [key, value] of Object.entries(data)) {
      if (value === null || value === undefined) continue;
      const name =
        (Object.hasOwn(names, key) ? names[key] : undefined) ?? key.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
      lines.push(`${name}=${shellQuote(String(value))}`);
    }
    for (const [name, value] of Object.entries(formats?.envDerived?.(data) ?? {}))
      lines.push(`${name}=${shellQuote(value)}`);
    return `${lines.join('\n')}\n`;
  }
  const render = formatsOf(engines).find((f) => f.files && Object.hasOwn(f.files, format))?.files?.[format];
  if (!render) throw new Error(`unknown format "${format}": expected one of ${credentialFormats(engines).join(', ')}`);
  return render({ ...envelope, data }, opts);
}
