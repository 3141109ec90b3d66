import { describe, expect, it } from 'vitest';
import { engines } from '../../engines/index.js';
import { issuePaths, issueRoutePattern, leaseIdPattern } from '../../src/engine-paths.js';

describe('issue paths, from the engines', () => {
  it("are Vault's creds and the paths each engine declares (AWS's sts)", () => {
    expect(issuePaths()).toEqual(['creds', 'sts']);
    expect(issueRoutePattern().exec('aws/sts/deploy')?.slice(1)).toEqual(['aws', 'sts', 'deploy']);
    expect(issueRoutePattern().test('db/roles/reader')).toBe(false);
    expect(leaseIdPattern().test('aws/sts/deploy/AbC123')).toBe(true);
    expect(leaseIdPattern().test('aws/tokens/deploy/AbC123')).toBe(false);
  });

  it("follow a registry's engine that adds a path", () => {
    const registry = { ...engines, kv: { ...engines.postgres, type: 'kv', paths: ['tokens'] } };
    expect(issuePaths(registry)).toEqual(['creds', 'sts', 'tokens']);
    expect(issueRoutePattern(registry).test('kv/tokens/app')).toBe(true);
    expect(leaseIdPattern(registry).test('kv/tokens/app/AbC123')).toBe(true);
  });

  it('refuses a path that is not a plain lower-case word (it goes into a regex and into lease ids)', () => {
    expect(() => issuePaths({ x: { ...engines.postgres, paths: ['a|b'] } })).toThrow('must be a lower-case word');
  });

  it('refuses the paths the broker answers under every mount itself (roles discovery, config/verify)', () => {
    for (const path of ['roles', 'config'])
      expect(() => issuePaths({ x: { ...engines.postgres, paths: [path] } })).toThrow(
        `engine path "${path}" is reserved`,
      );
  });
});
