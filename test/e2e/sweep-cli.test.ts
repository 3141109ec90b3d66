import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { runCli } from '../support/cli.js';
import {
  adminQuery,
  dropRolesWithPrefix,
  freshStoreDatabase,
  freshTargetDatabase,
  randomName,
  roleExists,
} from '../support/pg.js';

const PREFIX = 'swpcli';
/** A database one orphan owns: DROP OWNED leaves it, so that orphan's drop fails. */
const OWNED_DATABASE = `t_${PREFIX}_${randomName(8)}`;

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;

const orphanName = (label: string) => `${PREFIX}_${label}_${randomName(16)}`;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase('swpcli'),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
    sweep: { grace: '0s' },
  });
});

afterAll(async () => {
  await broker?.close();
  await adminQuery('postgres', `DROP DATABASE IF EXISTS ${OWNED_DATABASE}`);
  await dropRolesWithPrefix(PREFIX);
});

function env(): NodeJS.ProcessEnv {
  const clean = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN']) delete clean[key];
  return { ...clean, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN };
}

const sweep = (args: string[]) => runCli(['sweep', ...args], { env: env() });

describe('credbroker sweep', () => {
  it('reports as a table and as JSON, drops with --apply, and exits 0', async () => {
    const orphan = orphanName('manual');
    await adminQuery('postgres', `CREATE ROLE ${orphan} LOGIN`);

    const report = await sweep([]);
    expect(report.code, report.stderr).toBe(0);
    const lines = report.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^MOUNT\s+NAME\s+SINCE\s+RESULT$/);
    expect(lines[1]).toMatch(new RegExp(`^db\\s+${orphan}\\s+seen \\S+\\s+found$`));
    expect(lines.at(-1)).toBe('1 orphaned object on 1 swept mount, nothing dropped (run with --apply to drop them)');
    expect(await roleExists(orphan)).toBe(true);

    const json = await sweep(['--json', '--mount', 'db']);
    expect(json.code, json.stderr).toBe(0);
    const data = JSON.parse(json.stdout);
    expect(data.mounts).toHaveLength(1);
    expect(data.mounts[0].found.map((f: any) => f.name)).toEqual([orphan]);

    const applied = await sweep(['--apply']);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(new RegExp(`^db\\s+${orphan}\\s+seen \\S+\\s+dropped$`, 'm'));
    expect(applied.stdout.trimEnd().split('\n').at(-1)).toBe('1 orphaned object on 1 swept mount, 1 dropped, 0 failed');
    expect(await roleExists(orphan)).toBe(false);

    const empty = await sweep([]);
    expect(empty.code, empty.stderr).toBe(0);
    expect(empty.stdout).toBe('0 orphaned objects on 1 swept mount\n');
  });

  it('exits 1 and names the failure when a drop fails, and 1 on an unknown mount', async () => {
    const stubborn = orphanName('owner');
    await adminQuery('postgres', `CREATE ROLE ${stubborn} LOGIN`);
    await adminQuery('postgres', `CREATE DATABASE ${OWNED_DATABASE} OWNER ${stubborn}`);
    const applied = await sweep(['--apply']);
    expect(applied.code).toBe(1);
    expect(applied.stdout).toMatch(new RegExp(`^db\\s+${stubborn}\\s+seen \\S+\\s+failed: .*${OWNED_DATABASE}`, 'm'));
    expect(applied.stdout.trimEnd().split('\n').at(-1)).toBe('1 orphaned object on 1 swept mount, 0 dropped, 1 failed');
    expect(await roleExists(stubborn)).toBe(true);

    const unknown = await sweep(['--mount', 'nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no mount named "nope"');
  });

  it('--help shows an example', async () => {
    const help = await sweep(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('credbroker sweep --apply');
  });
});
