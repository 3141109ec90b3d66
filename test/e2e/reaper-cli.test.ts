import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_TOKEN, api, startTestBroker } from '../support/broker.js';
import { runCli } from '../support/cli.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase } from '../support/pg.js';

const PREFIX = 'rpausecli';

type TestBroker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: TestBroker;

beforeAll(async () => {
  const target = await freshTargetDatabase(PREFIX);
  broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase('rpausecli'),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
  });
});

afterAll(async () => {
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** The test's environment without any broker address or token, plus the given ones. */
function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const clean = { ...process.env };
  for (const key of ['CREDBROKER_ADDR', 'CREDBROKER_TOKEN', 'VAULT_ADDR', 'VAULT_TOKEN']) delete clean[key];
  return { ...clean, ...extra };
}

const reaper = (args: string[], token = ROOT_TOKEN) =>
  runCli(['reaper', ...args], { env: env({ CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: token }) });

describe('credbroker reaper', () => {
  it('pause, status and resume change what the broker reports, with clear output and exit 0', async () => {
    const paused = await reaper(['pause', '--reason', 'restored from backup']);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toMatch(/^reaper: PAUSED since \S+ by token\/root \(0 leases due, held until resume\)\n/);
    expect(paused.stdout).toContain('reason: restored from backup\n');
    expect((await api(broker, 'GET', 'sys/health', undefined, null)).body.reaper).toBe('paused');

    const json = await reaper(['status', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      paused: true,
      paused_by: 'token/root',
      reason: 'restored from backup',
      due_queued: 0,
    });

    const resumed = await reaper(['resume']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toBe('reaper: running (0 leases due)\n');
    expect((await api(broker, 'GET', 'sys/health', undefined, null)).body.reaper).toBe('running');
    expect((await reaper(['status'])).stdout).toBe('reaper: running (0 leases due)\n');
  });

  it('exits non-zero with the reason on a bad token, an unreachable broker, or an unknown subcommand', async () => {
    const denied = await reaper(['pause'], 'not-a-token');
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/permission denied/);
    expect((await api(broker, 'GET', 'sys/broker/reaper/status')).body.data.paused).toBe(false);

    const unreachable = await runCli(['reaper', 'status'], {
      env: env({ CREDBROKER_ADDR: 'http://127.0.0.1:1', CREDBROKER_TOKEN: ROOT_TOKEN }),
    });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/cannot reach credbroker/);

    const unknown = await reaper(['stop']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/unknown command/);
  });

  it('--help tells the restored-backup story with an example', async () => {
    const help = await runCli(['reaper', 'pause', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('credbroker reaper pause --reason');
    expect(help.stdout).toContain('restored from');
  });
});
