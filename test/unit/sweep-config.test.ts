import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { engineMountConfig } from '../../src/config/mount-schema.js';
import { ownedRolePattern } from '../../engines/postgres/owned-roles.js';
import { makeUsername } from '../../engines/postgres/target.js';

const base = { store: { url: 'postgres://u@localhost/db' }, root_token: 'r'.repeat(16) };
const mounts = (sweep?: unknown) => ({
  pg: { type: 'postgres', connection_url: 'postgres://u@localhost/t', ...(sweep === undefined ? {} : { sweep }) },
  aws: { type: 'aws', region: 'us-east-1', ...(sweep === undefined ? {} : { sweep }) },
});

describe('sweep config', () => {
  it('defaults to hourly, an hour of grace, and report on every mount', () => {
    const config = configSchema.parse({ ...base, mounts: mounts() });
    expect(config.sweep).toEqual({ schedule: '0 * * * *', grace: 3600 });
    expect(config.mounts.pg!.sweep).toBe('report');
    expect(config.mounts.aws!.sweep).toBe('report');
  });

  it('accepts sweep: drop on a mount of any engine, and keeps it out of the engine’s own config', () => {
    const config = configSchema.parse({
      ...base,
      sweep: { schedule: '*/5 * * * *', grace: '10m' },
      mounts: mounts('drop'),
    });
    expect(config.sweep.grace).toBe(600);
    expect(config.mounts.pg!.sweep).toBe('drop');
    expect(config.mounts.aws!.sweep).toBe('drop');
    expect(engineMountConfig(config.mounts.pg!)).not.toHaveProperty('sweep');
    // A validated config parses again to itself.
    expect(configSchema.parse(JSON.parse(JSON.stringify(config))).mounts.pg!.sweep).toBe('drop');
  });

  it('refuses an unknown mode, an unknown key and a bad schedule', () => {
    expect(() => configSchema.parse({ ...base, mounts: mounts('nuke') })).toThrow(/sweep/);
    expect(() => configSchema.parse({ ...base, sweep: { every: '1h' }, mounts: mounts() })).toThrow(/every/);
    expect(() => configSchema.parse({ ...base, sweep: { schedule: 'hourly' }, mounts: mounts() })).toThrow(/node-cron/);
  });
});

describe('the PostgreSQL owned-role pattern', () => {
  it('matches every name makeUsername makes, for any role name, and not the group or the admin shape', () => {
    const pattern = new RegExp(ownedRolePattern('cb', 16));
    for (const role of ['r', 'reader', 'etl-nightly', 'a'.repeat(32), 'x_y-z9'])
      expect(makeUsername('cb', role)).toMatch(pattern);
    for (const name of ['cb_readers', 'cb_admin', 'cbx_reader_0123456789abcdef', 'cb_reader_0123456789ABCDEF'])
      expect(name).not.toMatch(pattern);
  });
});
