import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { BrokerConfig } from '../../src/config/schema.js';
import { testConfig, type TestBrokerOptions } from './broker.js';
import { sweepLogPath } from './secret-recorder.js';

const FIXTURE = fileURLToPath(new URL('../integration/fixtures/serve.mjs', import.meta.url));

/**
 * Starts a broker as a child process (the compiled broker in dist/, via fixtures/serve.mjs), so a
 * test can SIGKILL it; resolves with its URL once it listens. `reaper` schedules its reaper.
 * Every child is added to `children`, for the test's afterAll to kill what is left. `options` is
 * either the usual test options or a whole parsed config; `logLevel` (default silent, or info while a secret sweep runs) logs to
 * stderr. `output` holds all the child has written so far, from its first byte.
 */
export async function startBrokerProcess(
  options: TestBrokerOptions | { config: BrokerConfig },
  children: Set<ChildProcess>,
  opts: { reaper?: boolean; logLevel?: string } = {},
): Promise<{ child: ChildProcess; url: string; output: { stdout: string; stderr: string } }> {
  const config = 'config' in options ? options.config : testConfig(options);
  const logPath = sweepLogPath('broker-process');
  const child = spawn(process.execPath, [FIXTURE], {
    env: {
      ...process.env,
      ...(opts.reaper ? { FIXTURE_REAPER: '1' } : {}),
      // At the production level by default while a secret sweep runs: its output is swept.
      ...(opts.logLevel || logPath ? { FIXTURE_LOG_LEVEL: opts.logLevel ?? 'info' } : {}),
      FIXTURE_CONFIG: JSON.stringify(config),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const output = { stdout: '', stderr: '' };
  child.stdout!.on('data', (c) => (output.stdout += c));
  child.stderr!.on('data', (c) => (output.stderr += c));
  if (logPath) {
    const sweepLog = createWriteStream(logPath, { flags: 'a' });
    child.stdout!.pipe(sweepLog, { end: false });
    child.stderr!.pipe(sweepLog, { end: false });
    child.once('exit', () => setTimeout(() => sweepLog.end(), 100));
  }
  const stderr = () => output.stderr;
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no READY line within 20 s; stderr: ${stderr()}`)), 20_000);
    child.stdout!.on('data', (c) => {
      out += c;
      const m = /^READY (\S+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the broker process exited (${code ?? signal}) before READY; stderr: ${stderr()}`));
    });
  });
  return { child, url, output };
}
