import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { sweepRun } from './suite-sweep.js';

declare module 'vitest' {
  export interface ProvidedContext {
    sweepDir: string | null;
  }
}

/**
 * Global setup of the integration project, listed first so that its teardown runs last, once the
 * shared PostgreSQL has stopped: at the start it makes the sweep's directory (the secrets the
 * workers record, the brokers' logs, the server's statement log) and clears the reliability
 * scenarios' figures; at the end it runs the secret sweep over everything the suite wrote, merges
 * the figures into test/reliability/results/latest.json and prints the table of issue 10.
 */
const RESULTS_DIR = fileURLToPath(new URL('../reliability/results/', import.meta.url));
const PARTS_DIR = join(RESULTS_DIR, '.parts');

const COLUMNS: [key: string, title: string][] = [
  ['kills', 'kills'],
  ['received', 'leases received'],
  ['lost', 'lost'],
  ['orphans', 'orphans'],
  ['maxOutliveMs', 'max outlive ms'],
  ['doubleDrops', 'double drops'],
  ['stuck', 'stuck'],
  ['tornAuditLines', 'torn audit'],
  ['unaudited', 'unaudited'],
  ['fuzzRequests', 'fuzz requests'],
  ['fuzz5xx', '5xx'],
  ['secretsChecked', 'secrets'],
  ['secretHits', 'hits'],
];

export function renderTable(rows: Record<string, unknown>[]): string {
  const header = ['scenario', 'form', ...COLUMNS.map(([, t]) => t)];
  const body = rows.map((r) => [
    String(r.scenario),
    String(r.form ?? ''),
    ...COLUMNS.map(([k]) => (r[k] === undefined ? '' : String(r[k]))),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

export default function setup(project: TestProject) {
  rmSync(PARTS_DIR, { recursive: true, force: true });
  const sweepDir = mkdtempSync(join(tmpdir(), 'credbroker-sweep-'));
  const startedAt = Date.now();
  process.env.CREDBROKER_SWEEP_DIR = sweepDir;
  project.provide('sweepDir', sweepDir);
  return () => {
    const sweep = sweepRun(sweepDir, startedAt);
    if (sweep) {
      mkdirSync(PARTS_DIR, { recursive: true });
      writeFileSync(
        join(PARTS_DIR, 'zz-suite-sweep.json'),
        JSON.stringify({
          scenario: 'secret sweep (whole run)',
          form: process.env.RELIABILITY_LONG === '1' ? 'long' : 'quick',
          secretsChecked: sweep.secrets,
          secretHits: sweep.hits.length,
          bytesSearched: sweep.bytes,
          files: sweep.files,
          kinds: JSON.stringify(sweep.kinds),
        }),
      );
      console.log(
        `secret sweep (whole run): ${sweep.secrets} secrets (${JSON.stringify(sweep.kinds)}) looked up in ${sweep.files} files, ${Math.round(sweep.bytes / 1e6)} MB: ${sweep.hits.length} plaintext hits`,
      );
    }
    rmSync(sweepDir, { recursive: true, force: true });
    printTable();
    if (sweep?.hits.length) {
      // vitest reports an error thrown here but still exits 0: the run must fail.
      process.exitCode = 1;
      process.once('exit', () => (process.exitCode = 1));
      throw new Error(`secret sweep: ${sweep.hits.length} secrets in plaintext:\n${sweep.hits.join('\n')}`);
    }
  };
}

function printTable(): void {
  if (!existsSync(PARTS_DIR)) return;
  const rows = readdirSync(PARTS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(PARTS_DIR, f), 'utf8')));
  if (!rows.length) return;
  const totals: Record<string, unknown> = { scenario: 'total', form: '' };
  for (const [key] of COLUMNS) {
    const values = rows.map((r) => r[key]).filter((v): v is number => typeof v === 'number');
    if (values.length) totals[key] = key === 'maxOutliveMs' ? Math.max(...values) : values.reduce((a, b) => a + b, 0);
  }
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, 'latest.json'),
    `${JSON.stringify({ finishedAt: new Date().toISOString(), scenarios: rows, totals }, null, 2)}\n`,
  );
  console.log(`\nreliability figures (test/reliability/results/latest.json):\n${renderTable([...rows, totals])}\n`);
}
