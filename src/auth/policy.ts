import { z } from 'zod';
import { durationSchema } from '../config/duration-schema.js';
import { globMatches } from './claims.js';

export type Capability = 'read' | 'create' | 'update' | 'list' | 'delete' | 'revoke' | 'sudo' | 'deny';

const CAPABILITIES = [
  'read',
  'create',
  'update',
  'list',
  'delete',
  'revoke',
  'sudo',
  'deny',
] as const satisfies readonly Capability[];
const ROOT_CAPABILITIES: Capability[] = CAPABILITIES.filter((c) => c !== 'deny');

const POLICY_NAME = /^[a-z][a-z0-9_-]{0,63}$/;
const TEMPLATE = /\{\{([^{}]*)\}\}/g;
const TEMPLATE_EXPR = /^identity\.(?:name|metadata\.[A-Za-z0-9_.-]+)$/;

// Vault reads a zero TTL as "the default"; as a cap it would mean dead credentials. Either way, not what was meant.
const allowedTtl = durationSchema('allowed_ttl').refine((seconds) => seconds !== 0, 'must be at least 1 second');

/** Why a rule path cannot be used, or undefined when it can. */
function pathProblem(path: string): string | undefined {
  if (path.startsWith('/'))
    return 'must not start with "/" (paths are written as after /v1/, e.g. "warehouse/creds/etl-reader")';
  // Control characters have no place in a path, and NUL marks an unfillable template (ANY_VALUE).
  if (/[\u0000-\u001f\u007f]/.test(path)) return 'must not contain control characters';
  for (const [, expr] of path.matchAll(TEMPLATE)) {
    if (!TEMPLATE_EXPR.test(expr!))
      return `unknown template "{{${expr}}}": use {{identity.name}} or {{identity.metadata.<key>}}`;
  }
  const literal = path.replace(TEMPLATE, 'x');
  const placement = templatePlacementProblem(path);
  if (placement) return placement;
  if (literal.includes('{{') || literal.includes('}}')) return 'has an unclosed "{{" or a stray "}}"';
  if (literal.slice(0, -1).includes('*')) return '"*" is only allowed at the very end';
  if (literal.split('/').some((segment) => segment.includes('+') && segment !== '+')) {
    return '"+" must be a whole path segment, e.g. "warehouse/+/etl-reader"';
  }
  return undefined;
}

/**
 * Characters that may follow a template inside a path segment. A value filled in must not contain
 * the one that follows it (a value that does fills nothing), so the value's end is known.
 * "-" is not among them: namespaces and names are full of it.
 */
const SEPARATORS = '_.:@~=,';

/**
 * Where a template sits decides whether two identities can be granted the same path by it. With
 * `{{ns}}-*`, namespace `team-a` matches `team-a-b-reader`: the value's end is not marked. So a
 * template must end its path segment, or be followed by a separator its value may not contain,
 * or be the segment's last template in a segment with no "*" (the rest is literal, so the value
 * is whatever the segment leaves).
 */
function templatePlacementProblem(path: string): string | undefined {
  const segments = path.split('/');
  for (const [i, segment] of segments.entries()) {
    const templates = [...segment.matchAll(TEMPLATE)];
    const glob = i === segments.length - 1 && segment.endsWith('*');
    for (const [j, m] of templates.entries()) {
      const next = segment[m.index + m[0].length];
      if (next === undefined || SEPARATORS.includes(next)) continue;
      if (!glob && j === templates.length - 1) continue;
      return `template "${m[0]}" must end its path segment or be followed by one of ${[...SEPARATORS].map((c) => `"${c}"`).join(' ')} (which its value then may not contain), e.g. "warehouse/creds/{{identity.metadata.namespace}}_*" or "warehouse/{{identity.metadata.namespace}}/*"`;
    }
  }
  return undefined;
}

const ruleSchema = z
  .object({
    path: z
      .string()
      .min(1)
      .max(512)
      .superRefine((path, ctx) => {
        const problem = pathProblem(path);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    capabilities: z.array(z.enum(CAPABILITIES)).min(1),
    allowed_ttl: allowedTtl.optional(),
  })
  .strict();

export const policyConfigSchema = z.record(z.string(), z.array(ruleSchema)).superRefine((policies, ctx) => {
  for (const name of Object.keys(policies)) {
    if (name === 'root') {
      ctx.addIssue({
        code: 'custom',
        path: [name],
        message: '"root" is reserved: the root token\'s policy grants everything and cannot be redefined',
      });
    } else if (!POLICY_NAME.test(name)) {
      ctx.addIssue({
        code: 'custom',
        path: [name],
        message:
          'a policy name must be 1-64 characters: lower-case letters, digits, "_" or "-", starting with a letter',
      });
    }
  }
});

export type PolicyConfig = z.infer<typeof policyConfigSchema>;

export interface IdentityForTemplates {
  name: string;
  metadata: Record<string, string>;
}

export interface Decision {
  allowed: boolean;
  /** Granted capabilities; empty when denied or nothing matched. Never contains 'deny'. */
  capabilities: Capability[];
  /** The configured path (templates unfilled) of the winning rule, or of the rule that denied. */
  matchedPath?: string;
  /** The smallest allowed_ttl among the winning rules, in seconds. */
  allowedTtl?: number;
}

/** A template part remembers the separator that follows it: its value may not contain that character. */
type Part = string | { metadata: string; stop?: string } | { name: true; stop?: string };

interface CompiledRule {
  path: string;
  parts: Part[];
  deny: boolean;
  capabilities: Capability[];
  allowedTtl?: number;
}

interface Match {
  rule: CompiledRule;
  /** Index of the first '+' or '*' in the filled path; its length when it has none. */
  firstWildcard: number;
  glob: boolean;
  plusSegments: number;
  length: number;
}

function compile(rule: PolicyConfig[string][number]): CompiledRule {
  const parts: Part[] = [];
  let last = 0;
  for (const m of rule.path.matchAll(TEMPLATE)) {
    if (m.index > last) parts.push(rule.path.slice(last, m.index));
    const expr = m[1]!;
    last = m.index + m[0].length;
    const next = rule.path[last];
    const stop = next !== undefined && SEPARATORS.includes(next) ? { stop: next } : {};
    parts.push(
      expr === 'identity.name'
        ? { name: true, ...stop }
        : { metadata: expr.slice('identity.metadata.'.length), ...stop },
    );
  }
  if (last < rule.path.length) parts.push(rule.path.slice(last));
  return {
    path: rule.path,
    parts,
    deny: rule.capabilities.includes('deny'),
    capabilities: rule.capabilities,
    ...(rule.allowed_ttl !== undefined ? { allowedTtl: rule.allowed_ttl } : {}),
  };
}

/**
 * A filled value becomes part of a path pattern, so it must stay inside its segment and stay
 * literal: an empty value would also widen `team_{{…}}*` to `team_*`.
 */
const safeValue = (v: unknown, stop: string | undefined): v is string =>
  typeof v === 'string' &&
  v !== '' &&
  !v.includes('/') &&
  !v.includes('*') &&
  !v.includes('+') &&
  !v.includes('..') &&
  !(stop && v.includes(stop));

/** Stands for "any value" in a deny rule whose template cannot be filled. */
const ANY_VALUE = '\u0000';

/**
 * The rule path with its templates filled. A value that is missing or unsafe makes an allow
 * rule grant nothing (undefined), and a deny rule deny whatever any value would have named
 * (the part becomes ANY_VALUE): a deny fails closed.
 */
function fill(rule: CompiledRule, identity: IdentityForTemplates): string | undefined {
  let out = '';
  for (const part of rule.parts) {
    if (typeof part === 'string') {
      out += part;
      continue;
    }
    // hasOwn: only the identity's own claims count, never a key reached through a prototype.
    const value =
      'name' in part
        ? identity.name
        : Object.hasOwn(identity.metadata, part.metadata)
          ? identity.metadata[part.metadata]
          : undefined;
    if (safeValue(value, part.stop)) out += value;
    else if (rule.deny) out += ANY_VALUE;
    else return undefined;
  }
  return out;
}

/**
 * '+' matches exactly one non-empty segment; a trailing '*' matches any suffix, '/' included;
 * ANY_VALUE matches any run within its segment.
 */
function matches(pattern: string, path: string): boolean {
  const glob = pattern.endsWith('*');
  const want = (glob ? pattern.slice(0, -1) : pattern).split('/');
  const have = path.split('/');
  if (glob ? have.length < want.length : have.length !== want.length) return false;
  return want.every((segment, i) => {
    const actual = have[i]!;
    if (segment === '+') return actual !== '';
    const last = glob && i === want.length - 1;
    if (!segment.includes(ANY_VALUE)) return last ? actual.startsWith(segment) : actual === segment;
    // Only deny rules get here. Values never hold "*" (safeValue), so the only stars are these.
    return globMatches(`${segment.replaceAll(ANY_VALUE, '*')}${last ? '*' : ''}`, actual);
  });
}

function measure(rule: CompiledRule, filled: string): Match {
  const wildcard = filled.search(/[+*]/);
  return {
    rule,
    firstWildcard: wildcard === -1 ? filled.length : wildcard,
    glob: filled.endsWith('*'),
    plusSegments: filled.split('/').filter((s) => s === '+').length,
    length: filled.length,
  };
}

/** Vault's priority: positive when `a` is more specific than `b`, 0 when they tie. */
function compareSpecificity(a: Match, b: Match): number {
  if (a.firstWildcard !== b.firstWildcard) return a.firstWildcard - b.firstWildcard;
  if (a.glob !== b.glob) return a.glob ? -1 : 1;
  if (a.plusSegments !== b.plusSegments) return b.plusSegments - a.plusSegments;
  return a.length - b.length;
}

/** The configured policies, compiled once; evaluated per request against the caller's policy names. */
/** Whether `decision` allows any of `capabilities`. */
export function grants(decision: Decision, capabilities: Capability | Capability[]): boolean {
  const wanted = Array.isArray(capabilities) ? capabilities : [capabilities];
  return decision.allowed && wanted.some((c) => decision.capabilities.includes(c));
}

export class PolicySet {
  private readonly rules = new Map<string, CompiledRule[]>();

  constructor(config: PolicyConfig) {
    for (const [name, rules] of Object.entries(config)) this.rules.set(name, rules.map(compile));
  }

  /**
   * What `policies` allow on `path` (no leading slash). 'root' grants everything. Otherwise the
   * most specific matching rules win, equally specific ones unioned across policies; any
   * matching 'deny', however general, denies.
   */
  evaluate(policies: string[], path: string, identity: IdentityForTemplates): Decision {
    if (policies.includes('root')) return { allowed: true, capabilities: [...ROOT_CAPABILITIES] };
    const found: Match[] = [];
    for (const name of new Set(policies)) {
      for (const rule of this.rules.get(name) ?? []) {
        const filled = fill(rule, identity);
        if (filled !== undefined && matches(filled, path)) found.push(measure(rule, filled));
      }
    }
    const denying = found.find((m) => m.rule.deny);
    if (denying) return { allowed: false, capabilities: [], matchedPath: denying.rule.path };
    if (found.length === 0) return { allowed: false, capabilities: [] };

    const best = found.reduce((a, b) => (compareSpecificity(b, a) > 0 ? b : a));
    const winners = found.filter((m) => compareSpecificity(m, best) === 0);
    const granted = new Set(winners.flatMap((m) => m.rule.capabilities));
    const ttls = winners.flatMap((m) => (m.rule.allowedTtl !== undefined ? [m.rule.allowedTtl] : []));
    return {
      allowed: granted.size > 0,
      capabilities: ROOT_CAPABILITIES.filter((c) => granted.has(c)),
      matchedPath: best.rule.path,
      ...(ttls.length ? { allowedTtl: Math.min(...ttls) } : {}),
    };
  }

  /** Whether `policies` grant any of `capabilities` on `path`; the one place a decision is read as yes or no. */
  allows(
    policies: string[],
    path: string,
    capabilities: Capability | Capability[],
    identity: IdentityForTemplates,
  ): boolean {
    return grants(this.evaluate(policies, path, identity), capabilities);
  }

  /** The configured policy names; 'root' is built in and never among them. */
  names(): string[] {
    return [...this.rules.keys()];
  }
}
