import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/sdk-consumer');
const TSC = join(ROOT, 'node_modules/typescript7/bin/tsc');
const scratch = mkdtempSync(join(FIXTURE, 'tmp-'));

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(args: string[], cwd = ROOT): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, args, { cwd, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

it('Node imports credbroker/sdk by its package name (the exports map), and nothing but ./sdk and ./package.json is exported', async () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  expect(Object.keys(pkg.exports)).toEqual(['./sdk', './package.json']);
  const imported = await run([
    '--input-type=module',
    '-e',
    `const sdk = await import('credbroker/sdk'); console.log(Object.keys(sdk).sort().join(','));
     try { await import('credbroker'); console.log('root importable'); } catch (e) { console.log(e.code); }`,
  ]);
  expect(imported.stderr).toBe('');
  const [names, root] = imported.stdout.trim().split('\n');
  for (const name of ['Broker', 'Lease', 'BrokerApiError', 'BrokerUnreachableError', 'RotatingPgPool', 'SdkError'])
    expect(names!.split(',')).toContain(name);
  expect(root).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  const sdk = await import('credbroker/sdk');
  expect(typeof sdk.Broker).toBe('function');
});

it('a consumer snippet type-checks against the emitted declarations, and a type error in one is caught', async () => {
  const ok = await run([TSC, '-p', FIXTURE]);
  expect(ok.stdout + ok.stderr).toBe('');
  expect(ok.code).toBe(0);
  writeFileSync(
    join(scratch, 'bad.ts'),
    "import { Broker } from 'credbroker/sdk';\nexport const n: number = new Broker().address;\n",
  );
  writeFileSync(join(scratch, 'tsconfig.json'), JSON.stringify({ extends: '../tsconfig.json', files: ['bad.ts'] }));
  const bad = await run([TSC, '-p', scratch]);
  expect(bad.code).not.toBe(0);
  expect(bad.stdout).toMatch(/bad\.ts.*TS2322: Type 'string' is not assignable to type 'number'/);
});
