import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/package-root.js';
import { sql, startCluster } from './lib/cluster.js';
import type { BenchContext, Scenario } from './lib/context.js';
import { burstScenario } from './scenarios/burst.js';
import { issueScenarios } from './scenarios/issue.js';
import { reaperScenario } from './scenarios/reaper.js';
import { scaleScenarios } from './scenarios/scale.js';
import { sdkScenario } from './scenarios/sdk.js';

const HELP = `Usage: npm run bench [-- --quick] [-- --only issue,burst,reaper,scale,sdk]

Runs the broker and a raw-PostgreSQL baseline against one embedded PostgreSQL server, prints a
Markdown table and writes bench/results/<date>.json and bench/results/latest.json.
  --quick   smaller counts (under 2 minutes); same scenario names
  --only    a comma-separated subset of groups`;

const GROUPS: Record<string, (ctx: BenchContext) => Promise<void>> = {
  issue: issueScenarios,
  burst: burstScenario,
  reaper: reaperScenario,
  scale: scaleScenarios,
  sdk: sdkScenario,
};

function table(scenarios: Scenario[]): string {
  const lines = ['| scenario | unit | broker | raw | ratio | details |', '|---|---|---:|---:|---:|---|'];
  for (const s of scenarios) {
    const { name, unit, broker, raw, ratio, ...details } = s;
    const extra = Object.entries(details)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
    lines.push(`| ${name} | ${unit} | ${broker} | ${raw} | ${ratio} | ${extra} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const quick = args.includes('--quick');
  const onlyArg = args[args.indexOf('--only') + 1];
  const only = args.includes('--only') && onlyArg ? onlyArg.split(',') : Object.keys(GROUPS);
  const unknown = only.filter((g) => !GROUPS[g]);
  if (unknown.length) throw new Error(`unknown group(s): ${unknown.join(', ')}\n\n${HELP}`);

  const started = performance.now();
  const progress = (m: string) =>
    process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(0).padStart(4)}s] ${m}\n`);
  progress('starting embedded PostgreSQL');
  const server = await startCluster();
  const scenarios: Scenario[] = [];
  try {
    const version = (await sql<{ server_version: string }>(server, 'postgres', 'SHOW server_version'))[0]!
      .server_version;
    const ctx: BenchContext = { server, quick, progress, record: (s) => scenarios.push(s) };
    for (const group of only) await GROUPS[group]!(ctx);
    const date = new Date().toISOString();
    const result = {
      date,
      quick,
      machine: {
        nproc: os.availableParallelism(),
        memory_gib: Math.round(os.totalmem() / 2 ** 30),
        cpu: os.cpus()[0]?.model ?? 'unknown',
        node: process.version,
        postgresql: version,
      },
      seconds: Math.round((performance.now() - started) / 1000),
      scenarios,
    };
    const dir = join(packageRoot(), 'bench/results');
    mkdirSync(dir, { recursive: true });
    const json = `${JSON.stringify(result, null, 2)}\n`;
    writeFileSync(join(dir, `${date.slice(0, 19).replace(/:/g, '-')}${quick ? '-quick' : ''}.json`), json);
    writeFileSync(join(dir, 'latest.json'), json);
    process.stdout.write(
      `\n${table(scenarios)}\n\n${result.machine.nproc} cores, ${result.machine.memory_gib} GiB, Node ${process.version}, PostgreSQL ${version}, ${result.seconds} s${quick ? ' (quick)' : ''}\n`,
    );
  } finally {
    await server.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
