import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PolicySet, policyConfigSchema, type Capability, type IdentityForTemplates } from '../../src/auth/policy.js';
import { formatIssues } from '../../src/config/load.js';

const anyone: IdentityForTemplates = { name: 'system:serviceaccount:etl:reader', metadata: { namespace: 'etl' } };
const ETL = 'warehouse/creds/etl-reader';

/** A PolicySet from raw config, parsed as at config load so durations are seconds. */
function policySet(config: unknown): PolicySet {
  return new PolicySet(policyConfigSchema.parse(config));
}

/** The capabilities one policy of one rule per path grants on `path`. */
function granted(rules: Record<string, Capability[]>, path: string): Capability[] {
  const set = policySet({
    p: Object.entries(rules).map(([rulePath, capabilities]) => ({ path: rulePath, capabilities })),
  });
  return set.evaluate(['p'], path, anyone).capabilities;
}

describe('policy path matching', () => {
  it('an exact path matches only itself', () => {
    const set = policySet({ p: [{ path: ETL, capabilities: ['read'] }] });
    expect(set.allows(['p'], ETL, 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/creds/etl-readers', 'read', anyone)).toBe(false);
    expect(set.allows(['p'], 'warehouse/creds/etl', 'read', anyone)).toBe(false);
    expect(set.allows(['p'], `${ETL}/x`, 'read', anyone)).toBe(false);
    expect(set.allows(['p'], ETL, 'update', anyone)).toBe(false);
  });

  it('"+" matches exactly one segment, never none and never two', () => {
    const set = policySet({ p: [{ path: 'warehouse/+/etl-reader', capabilities: ['read'] }] });
    expect(set.allows(['p'], ETL, 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/sts/etl-reader', 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/etl-reader', 'read', anyone)).toBe(false);
    expect(set.allows(['p'], 'warehouse//etl-reader', 'read', anyone)).toBe(false);
    expect(set.allows(['p'], 'warehouse/creds/x/etl-reader', 'read', anyone)).toBe(false);
  });

  it('a trailing "*" matches any suffix, across segments, but not a shorter path', () => {
    const set = policySet({ p: [{ path: 'warehouse/creds/etl-*', capabilities: ['read'] }] });
    expect(set.allows(['p'], 'warehouse/creds/etl-', 'read', anyone)).toBe(true);
    expect(set.allows(['p'], ETL, 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/creds/etl-reader/more/segments', 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/creds/etl', 'read', anyone)).toBe(false);
    expect(set.allows(['p'], 'warehouse/creds/bi-reader', 'read', anyone)).toBe(false);

    const dir = policySet({ p: [{ path: 'warehouse/creds/*', capabilities: ['read'] }] });
    expect(dir.allows(['p'], 'warehouse/creds', 'read', anyone)).toBe(false);
  });

  it('"+" before a trailing "*" still holds its segment', () => {
    const set = policySet({ p: [{ path: 'warehouse/+/etl-*', capabilities: ['read'] }] });
    expect(set.allows(['p'], 'warehouse/creds/etl-reader/x', 'read', anyone)).toBe(true);
    expect(set.allows(['p'], 'warehouse/a/b/etl-reader', 'read', anyone)).toBe(false);
  });
});

describe('precedence among matching rules', () => {
  it('a more specific rule replaces a general one instead of adding to it', () => {
    expect(granted({ 'warehouse/*': ['read', 'update'], [ETL]: ['read'] }, ETL)).toEqual(['read']);
    expect(granted({ 'warehouse/*': ['read', 'update'], [ETL]: ['read'] }, 'warehouse/creds/bi-reader')).toEqual([
      'read',
      'update',
    ]);
  });

  it('the rule whose first wildcard comes later wins', () => {
    expect(granted({ 'warehouse/+/etl-reader': ['read'], 'warehouse/creds/+': ['list'] }, ETL)).toEqual(['list']);
    expect(granted({ 'warehouse/creds/+': ['list'], 'warehouse/+/etl-reader': ['read'] }, ETL)).toEqual(['list']);
  });

  it('at the same first wildcard, no trailing "*" beats a trailing "*"', () => {
    expect(granted({ 'warehouse/creds/*': ['read'], 'warehouse/creds/+': ['list'] }, ETL)).toEqual(['list']);
    expect(granted({ 'warehouse/creds/+': ['list'], 'warehouse/creds/*': ['read'] }, ETL)).toEqual(['list']);
  });

  it('then fewer "+" segments win', () => {
    expect(granted({ 'warehouse/+/+': ['read'], 'warehouse/+/etl-reader': ['list'] }, ETL)).toEqual(['list']);
    expect(granted({ 'warehouse/+/etl-reader': ['list'], 'warehouse/+/+': ['read'] }, ETL)).toEqual(['list']);
  });

  it('then the longer path wins', () => {
    expect(granted({ 'warehouse/+/etl*': ['read'], 'warehouse/+/etl-rea*': ['list'] }, ETL)).toEqual(['list']);
    expect(granted({ 'warehouse/+/etl-rea*': ['list'], 'warehouse/+/etl*': ['read'] }, ETL)).toEqual(['list']);
  });

  it('unions equally specific rules from different policies', () => {
    const set = policySet({
      readers: [{ path: 'warehouse/creds/+', capabilities: ['read'] }],
      listers: [{ path: 'warehouse/creds/+', capabilities: ['list'] }],
      general: [{ path: 'warehouse/*', capabilities: ['sudo'] }],
    });
    expect(set.evaluate(['readers', 'listers', 'general'], ETL, anyone)).toEqual({
      allowed: true,
      capabilities: ['read', 'list'],
      matchedPath: 'warehouse/creds/+',
    });
    expect(set.evaluate(['readers'], ETL, anyone).capabilities).toEqual(['read']);
  });
});

describe('deny', () => {
  it('a specific deny beats a general grant', () => {
    const set = policySet({
      p: [
        { path: 'warehouse/creds/*', capabilities: ['read'] },
        { path: ETL, capabilities: ['deny'] },
      ],
    });
    expect(set.evaluate(['p'], ETL, anyone)).toEqual({ allowed: false, capabilities: [], matchedPath: ETL });
    expect(set.allows(['p'], 'warehouse/creds/bi-reader', 'read', anyone)).toBe(true);
  });

  it('a general deny beats a more specific grant, unlike Vault', () => {
    const set = policySet({
      fence: [{ path: 'warehouse/*', capabilities: ['deny'] }],
      etl: [{ path: ETL, capabilities: ['read', 'update'] }],
    });
    expect(set.evaluate(['etl'], ETL, anyone).allowed).toBe(true);
    expect(set.evaluate(['fence', 'etl'], ETL, anyone)).toEqual({
      allowed: false,
      capabilities: [],
      matchedPath: 'warehouse/*',
    });
    expect(set.allows(['etl', 'fence'], ETL, 'read', anyone)).toBe(false);
  });

  it('a deny on a path that does not match takes nothing away', () => {
    const set = policySet({
      p: [
        { path: 'warehouse/creds/bi-*', capabilities: ['deny'] },
        { path: 'warehouse/creds/+', capabilities: ['read'] },
      ],
    });
    expect(set.allows(['p'], ETL, 'read', anyone)).toBe(true);
  });
});

describe('policy names', () => {
  const set = policySet({ etl: [{ path: ETL, capabilities: ['read'] }] });

  it('an unknown policy grants nothing', () => {
    expect(set.evaluate(['nope'], ETL, anyone)).toEqual({ allowed: false, capabilities: [] });
    expect(set.evaluate([], ETL, anyone).allowed).toBe(false);
  });

  it('root grants everything, sudo included, despite a deny in another policy', () => {
    const fenced = policySet({ fence: [{ path: '*', capabilities: ['deny'] }] });
    const decision = fenced.evaluate(['fence', 'root'], 'sys/leases/revoke-force/warehouse', anyone);
    expect(decision.allowed).toBe(true);
    expect(decision.capabilities).toEqual(
      expect.arrayContaining(['read', 'create', 'update', 'list', 'delete', 'revoke', 'sudo']),
    );
    expect(decision.capabilities).not.toContain('deny');
    expect(fenced.allows(['root'], 'anything/at/all', 'sudo', anyone)).toBe(true);
  });

  it('names() lists the configured policies and not root', () => {
    expect(set.names()).toEqual(['etl']);
  });
});

describe('templated rule paths', () => {
  const set = policySet({
    team: [{ path: 'warehouse/creds/{{identity.metadata.namespace}}_*', capabilities: ['read'] }],
    own: [{ path: 'sys/leases/lookup/{{identity.name}}', capabilities: ['list'] }],
  });
  const team = (namespace: string) => ({ name: 'ci', metadata: { namespace } });

  it("identity.metadata.namespace matches only that team's path", () => {
    expect(set.allows(['team'], 'warehouse/creds/etl_reader', 'read', team('etl'))).toBe(true);
    expect(set.allows(['team'], 'warehouse/creds/bi_reader', 'read', team('etl'))).toBe(false);
    expect(set.allows(['team'], 'warehouse/creds/bi_reader', 'read', team('bi'))).toBe(true);
  });

  it('identity.name is filled too', () => {
    expect(set.allows(['own'], 'sys/leases/lookup/ci', 'list', team('etl'))).toBe(true);
    expect(set.allows(['own'], 'sys/leases/lookup/other', 'list', team('etl'))).toBe(false);
  });

  it.each([
    ['a "/"', 'etl/../bi'],
    ['a "/" aiming at another team', 'x/creds/bi'],
    ['".."', '..'],
    ['a "*"', '*'],
    ['a "+"', '+'],
    ['nothing', ''],
  ])('a value containing %s never matches', (_, namespace) => {
    for (const path of [
      'warehouse/creds/etl_reader',
      ETL,
      'warehouse/creds/bi_reader',
      `warehouse/creds/${namespace}_reader`,
      'warehouse/creds/x/creds/bi_reader',
    ]) {
      expect(set.evaluate(['team'], path, team(namespace)).allowed).toBe(false);
    }
  });

  it('a rule whose template names a missing key never matches, even one on the prototype', () => {
    const keyed = policySet({
      p: [{ path: 'warehouse/creds/{{identity.metadata.constructor}}_*', capabilities: ['read'] }],
    });
    expect(keyed.allows(['p'], ETL, 'read', { name: 'ci', metadata: {} })).toBe(false);
    expect(
      keyed.allows(['p'], 'warehouse/creds/function Object() { [native code] }_x', 'read', {
        name: 'ci',
        metadata: {},
      }),
    ).toBe(false);
    expect(set.allows(['team'], 'warehouse/creds/etl_reader', 'read', { name: 'ci', metadata: {} })).toBe(false);
    expect(
      set.allows(['team'], 'warehouse/creds/etl_reader', 'read', {
        name: 'ci',
        metadata: Object.create({ namespace: 'etl' }) as Record<string, string>,
      }),
    ).toBe(false);
  });
});

describe('allowed_ttl', () => {
  it("the smallest allowed_ttl among the winning rules applies; a less specific rule's does not", () => {
    const set = policySet({
      a: [{ path: 'warehouse/creds/+', capabilities: ['read'], allowed_ttl: '1h' }],
      b: [{ path: 'warehouse/creds/+', capabilities: ['read'], allowed_ttl: '90s' }],
      c: [{ path: 'warehouse/creds/+', capabilities: ['read'] }],
      general: [{ path: 'warehouse/*', capabilities: ['read'], allowed_ttl: 10 }],
    });
    expect(set.evaluate(['a', 'b', 'c', 'general'], ETL, anyone).allowedTtl).toBe(90);
    expect(set.evaluate(['a', 'c'], ETL, anyone).allowedTtl).toBe(3600);
    expect(set.evaluate(['c', 'general'], ETL, anyone)).not.toHaveProperty('allowedTtl');
    expect(set.evaluate(['general'], ETL, anyone).allowedTtl).toBe(10);
  });
});

describe('policy config validation', () => {
  /** The formatted issues (as config load reports them), or '' when the config is valid. */
  const problems = (config: unknown) => {
    const result = policyConfigSchema.safeParse(config);
    return result.success ? '' : formatIssues(result.error.issues, ['policies']);
  };
  const rule = (extra: Record<string, unknown>) => ({ etl: [{ path: ETL, capabilities: ['read'], ...extra }] });

  it('accepts a realistic config, durations in both forms', () => {
    expect(
      problems({
        etl: [
          { path: ETL, capabilities: ['read', 'update'], allowed_ttl: '1h' },
          { path: 'warehouse/+/x*', capabilities: ['deny'], allowed_ttl: 90 },
        ],
        empty: [],
      }),
    ).toBe('');
  });

  it.each([
    ['the reserved name root', { root: [] }, /^policies\.root: .*reserved/],
    ['an upper-case policy name', { ETL: [] }, /^policies\.ETL: a policy name must be/],
    ['an unknown capability', rule({ capabilities: ['read', 'write'] }), /^policies\.etl\.0\.capabilities\.1: /],
    ['no capabilities', rule({ capabilities: [] }), /^policies\.etl\.0\.capabilities: /],
    ['an unknown field', rule({ ttl: 60 }), /^policies\.etl\.0: .*ttl/],
    ['an empty path', rule({ path: '' }), /^policies\.etl\.0\.path: /],
    ['a path over 512 characters', rule({ path: 'a'.repeat(513) }), /^policies\.etl\.0\.path: /],
    ['a leading "/"', rule({ path: `/${ETL}` }), /^policies\.etl\.0\.path: must not start with "\/"/],
    [
      'a control character',
      rule({ path: 'warehouse/creds/\u0000x' }),
      /^policies\.etl\.0\.path: must not contain control characters/,
    ],
    [
      'a "*" before the end',
      rule({ path: 'warehouse/*/etl' }),
      /^policies\.etl\.0\.path: "\*" is only allowed at the very end/,
    ],
    [
      'a "+" inside a segment',
      rule({ path: 'warehouse/cred+/etl' }),
      /^policies\.etl\.0\.path: "\+" must be a whole path segment/,
    ],
    [
      'an unknown template',
      rule({ path: 'warehouse/creds/{{identity.entity.id}}' }),
      /^policies\.etl\.0\.path: unknown template "\{\{identity\.entity\.id\}\}"/,
    ],
    [
      'an unclosed template',
      rule({ path: 'warehouse/creds/{{identity.name' }),
      /^policies\.etl\.0\.path: has an unclosed/,
    ],
    [
      'a malformed allowed_ttl',
      rule({ allowed_ttl: 'an hour' }),
      /^policies\.etl\.0\.allowed_ttl: allowed_ttl must be/,
    ],
    ['a zero allowed_ttl', rule({ allowed_ttl: 0 }), /^policies\.etl\.0\.allowed_ttl: must be at least 1 second/],
  ])('refuses %s, naming the key', (_, config, expected) => {
    expect(problems(config)).toMatch(expected);
  });
});

describe('templates that are safe by construction', () => {
  const problems = (path: string) => {
    const result = policyConfigSchema.safeParse({ p: [{ path, capabilities: ['read'] }] });
    return result.success ? '' : formatIssues(result.error.issues, ['policies']);
  };

  it.each([
    [
      'a template followed by "-" and a glob (the old README example)',
      'warehouse/creds/{{identity.metadata.namespace}}-*',
    ],
    ['a template followed directly by a glob', 'warehouse/creds/{{identity.metadata.namespace}}*'],
    [
      'two templates in one segment with nothing between them',
      'warehouse/creds/{{identity.metadata.a}}{{identity.metadata.b}}',
    ],
    ['two templates in one segment split by "-"', 'warehouse/creds/{{identity.metadata.a}}-{{identity.name}}'],
  ])('refuses %s at load, naming the fix', (_, path) => {
    expect(problems(path)).toMatch(/^policies\.p\.0\.path: .*must end its path segment or be followed by one of/);
  });

  it.each([
    'warehouse/creds/{{identity.metadata.namespace}}_*',
    'warehouse/{{identity.metadata.namespace}}/*',
    'warehouse/creds/{{identity.metadata.namespace}}',
    'warehouse/creds/{{identity.metadata.namespace}}-reader',
    'warehouse/creds/ns-{{identity.metadata.namespace}}',
    'warehouse/creds/{{identity.metadata.a}}_{{identity.metadata.b}}-x',
  ])('accepts %s', (path) => {
    expect(problems(path)).toBe('');
  });

  const team = policySet({
    team: [{ path: 'warehouse/creds/{{identity.metadata.namespace}}_*', capabilities: ['read'] }],
  });
  const ns = (namespace: string) => ({ name: 'ci', metadata: { namespace } });

  it("namespace team-a cannot read team-a-b's roles, and each reads its own", () => {
    expect(team.allows(['team'], 'warehouse/creds/team-a_reader', 'read', ns('team-a'))).toBe(true);
    expect(team.allows(['team'], 'warehouse/creds/team-a-b_reader', 'read', ns('team-a-b'))).toBe(true);
    expect(team.allows(['team'], 'warehouse/creds/team-a-b_reader', 'read', ns('team-a'))).toBe(false);
    expect(team.allows(['team'], 'warehouse/creds/team-a_reader', 'read', ns('team-a-b'))).toBe(false);
  });

  it('a value containing the separator that follows its template fills nothing', () => {
    expect(team.allows(['team'], 'warehouse/creds/team_a_reader', 'read', ns('team'))).toBe(true);
    expect(team.allows(['team'], 'warehouse/creds/team_a_reader', 'read', ns('team_a'))).toBe(false);
    expect(team.allows(['team'], 'warehouse/creds/team_a_x', 'read', ns('team_a'))).toBe(false);
  });

  it('distinct identities never share a path granted by one templated rule (any values, any paths)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom('a', 'b', '-', '_', '.', '/') }),
        fc.string({ unit: fc.constantFrom('a', 'b', '-', '_', '.') }),
        fc.string({ unit: fc.constantFrom('a', 'b', '-', '_', '.') }),
        (suffix, v1, v2) => {
          fc.pre(v1 !== v2);
          for (const rulePath of [
            'w/c/{{identity.metadata.namespace}}_*',
            'w/{{identity.metadata.namespace}}/*',
            'w/c/x.{{identity.metadata.namespace}}',
            'w/c/{{identity.metadata.namespace}}.{{identity.name}}-r',
          ]) {
            const set = policySet({ p: [{ path: rulePath, capabilities: ['read'] }] });
            const path = `w/c/${v1}_${suffix}`;
            const paths = [path, `w/${v1}/${suffix}`, `w/c/x.${v1}`, `w/c/${v1}.${suffix}-r`];
            for (const p of paths) {
              const a = set.allows(['p'], p, 'read', { name: suffix, metadata: { namespace: v1 } });
              const b = set.allows(['p'], p, 'read', { name: suffix, metadata: { namespace: v2 } });
              expect(a && b).toBe(false);
            }
          }
        },
      ),
    );
  });
});

describe('a templated deny fails closed', () => {
  const fenced = policySet({
    fence: [{ path: 'warehouse/creds/{{identity.metadata.namespace}}_admin', capabilities: ['deny'] }],
    all: [{ path: 'warehouse/creds/*', capabilities: ['read'] }],
    own: [{ path: 'warehouse/{{identity.metadata.team}}/+', capabilities: ['read'] }],
    own_fence: [{ path: 'warehouse/{{identity.metadata.team}}/secret', capabilities: ['deny'] }],
  });

  it.each([
    ['missing', {}],
    ['empty', { namespace: '' }],
    ['containing "/"', { namespace: 'a/b' }],
    ['containing "*"', { namespace: '*' }],
    ['containing the separator', { namespace: 'etl_x' }],
  ])('a deny whose value is %s denies every path the rule could name', (_, metadata) => {
    const who = { name: 'ci', metadata: metadata as Record<string, string> };
    expect(fenced.allows(['fence', 'all'], 'warehouse/creds/etl_admin', 'read', who)).toBe(false);
    expect(fenced.allows(['fence', 'all'], 'warehouse/creds/bi_admin', 'read', who)).toBe(false);
    // Paths the rule can never name stay granted.
    expect(fenced.allows(['fence', 'all'], 'warehouse/creds/etl_reader', 'read', who)).toBe(true);
  });

  it('a resolvable deny denies only its own path', () => {
    const who = { name: 'ci', metadata: { namespace: 'etl' } };
    expect(fenced.allows(['fence', 'all'], 'warehouse/creds/etl_admin', 'read', who)).toBe(false);
    expect(fenced.allows(['fence', 'all'], 'warehouse/creds/bi_admin', 'read', who)).toBe(true);
  });

  it('an unresolvable allow grants nothing, while its deny twin still denies', () => {
    const nobody = { name: 'ci', metadata: {} };
    expect(fenced.allows(['own'], 'warehouse/etl/reader', 'read', nobody)).toBe(false);
    expect(fenced.allows(['own'], 'warehouse/etl/reader', 'read', { name: 'ci', metadata: { team: 'etl' } })).toBe(
      true,
    );
    expect(
      fenced.allows(['own', 'own_fence'], 'warehouse/etl/secret', 'read', { name: 'ci', metadata: { team: 'etl' } }),
    ).toBe(false);
    const wide = policySet({
      any: [{ path: 'warehouse/*', capabilities: ['read'] }],
      own_fence: [{ path: 'warehouse/{{identity.metadata.team}}/secret', capabilities: ['deny'] }],
    });
    expect(wide.allows(['any', 'own_fence'], 'warehouse/bi/secret', 'read', nobody)).toBe(false);
    expect(wide.allows(['any', 'own_fence'], 'warehouse/bi/other', 'read', nobody)).toBe(true);
  });
});
