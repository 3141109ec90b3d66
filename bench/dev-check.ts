import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../src/package-root.js';
import { randomSecret } from '../src/random.js';
import { percentile, round } from './lib/stats.js';

/**
 * The numbers a newcomer sees: `credbroker dev` as the README starts it, 200 sequential issues
 * over HTTP (latency), then 100 short leases left to expire (expiry → role dropped).
 * Run: npm run build && node dist/bench/dev-check.js
 */
async function main(): Promise<void> {
  const token = `cbr.${randomSecret()}`;
  const dev = spawn(
    process.execPath,
    [join(packageRoot(), 'dist/src/cli/main.js'), 'dev', '--port', '0', '--root-token', token],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    dev.stdout!.on('data', (d) => {
      out += d;
      const m = /export CREDBROKER_ADDR=(\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    dev.once('exit', (code) => reject(new Error(`dev exited with ${code}`)));
  });
  const call = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await fetch(`${address}/v1/${path}`, {
      method,
      headers: { 'x-vault-token': token },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.status === 204 ? null : res.json();
  };
  try {
    for (let i = 0; i < 20; i++) await call('PUT', 'demo/creds/readonly');
    const latencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await call('PUT', 'demo/creds/readonly');
      latencies.push(performance.now() - t);
    }
    process.stdout.write(
      `issue latency, 200 sequential requests: p50 ${round(percentile(latencies, 50))} ms, p99 ${round(percentile(latencies, 99))} ms\n`,
    );

    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push((await call('PUT', 'demo/creds/readonly', { ttl: '2s' })).lease_id);
    const lags: number[] = [];
    for (const id of ids) {
      for (;;) {
        const { data } = await call('PUT', 'sys/leases/lookup', { lease_id: id });
        if (data.state === 'revoked') {
          lags.push((Date.parse(data.revoked_at) - Date.parse(data.expire_time)) / 1000);
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    process.stdout.write(
      `expiry → role dropped, 100 leases of 2 s: median ${round(percentile(lags, 50))} s, worst ${round(Math.max(...lags))} s\n`,
    );
  } finally {
    dev.kill('SIGTERM');
  }
}

main().catch((err) => {
  process.stderr.write(`dev-check failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
