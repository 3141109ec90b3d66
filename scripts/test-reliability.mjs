#!/usr/bin/env node
// `npm run test:reliability [-- --long] [vitest args…]`: the reliability suite, its long form with
// --long (RELIABILITY_LONG=1), since vitest refuses arguments it does not know.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const long = args.includes('--long');
const rest = args.filter((a) => a !== '--long');
const env = { ...process.env, ...(long ? { RELIABILITY_LONG: '1' } : {}) };
const run = (cmd, cmdArgs) =>
  spawnSync(cmd, cmdArgs, { stdio: 'inherit', env, shell: process.platform === 'win32' }).status ?? 1;

const built = run('npm', ['run', 'build']);
if (built !== 0) process.exit(built);
process.exit(run('npx', ['vitest', 'run', 'test/reliability', ...rest]));
