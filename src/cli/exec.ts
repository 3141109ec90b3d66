import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { clientTlsFromEnv } from '../client/tls.js';
import { Broker } from '../sdk/broker.js';
import type { Lease } from '../sdk/lease.js';
import { credentialEnv } from './credential-env.js';

export interface ExecOptions {
  lease: string[];
  envPrefix: string;
  ttl?: string;
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** The broker's token is for this process, not for the command it starts. */
const WITHHELD = ['CREDBROKER_TOKEN', 'VAULT_TOKEN'];

/**
 * What a credential field named like them (a plugin engine's `path`, `user`…) must not replace:
 * the variables that decide what the command is and runs as. A prefix avoids the clash.
 */
const PROTECTED = new Set([
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'PWD',
  'LD_PRELOAD',
  'LD_LIBRARY_PATH',
  'NODE_OPTIONS',
]);

async function revokeAll(leases: Lease[]): Promise<boolean> {
  const outcomes = await Promise.allSettled(leases.map((lease) => lease.revoke()));
  let ok = true;
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'fulfilled') return;
    ok = false;
    const lease = leases[i]!;
    process.stderr.write(
      `credbroker exec: could not revoke ${lease.id} (it ends at ${lease.expiresAt.toISOString()}): ${(outcome.reason as Error).message}\n`,
    );
  });
  return ok;
}

/** The child's environment: ours without the broker token, plus every lease's variables; two leases may not set one name. */
function childEnv(leases: Lease[], prefix: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of WITHHELD) delete env[name];
  const setBy = new Map<string, string>();
  for (const lease of leases) {
    const vars = credentialEnv(
      { lease_id: lease.id, lease_duration: 0, renewable: lease.renewable, data: lease.data },
      prefix,
    );
    for (const [name, value] of Object.entries(vars)) {
      if (PROTECTED.has(name))
        throw new Error(`${lease.path} would set ${name}, which exec does not replace: give --env-prefix`);
      const other = setBy.get(name);
      if (other) throw new Error(`${other} and ${lease.path} both set ${name}: run one exec per lease of a kind`);
      setBy.set(name, lease.path);
      env[name] = value;
    }
  }
  return env;
}

/** `credbroker exec`: lease, run the command with the credentials in its environment, revoke when it ends. */
export async function exec(command: string, args: string[], opts: ExecOptions): Promise<void> {
  if (opts.lease.length === 0) throw new Error('give at least one --lease <mount>/creds/<role>');
  const tls = clientTlsFromEnv();
  if (tls.skipVerify)
    process.stderr.write(
      "WARNING: CREDBROKER_SKIP_VERIFY is set: the broker's certificate is NOT verified. Use CREDBROKER_CACERT instead.\n",
    );
  const broker = new Broker({ tls });
  // Installed before the first lease: a signal while leasing must not kill us with leases live.
  const running: { child?: ChildProcess } = {};
  let early: NodeJS.Signals | undefined;
  const handlers = FORWARDED.map(
    (signal) => [signal, () => (running.child ? running.child.kill(signal) : (early ??= signal))] as const,
  );
  for (const [signal, handler] of handlers) process.on(signal, handler);
  const leases: Lease[] = [];
  let env: NodeJS.ProcessEnv;
  try {
    for (const path of opts.lease) if (!early) leases.push(await broker.lease(path, { ttl: opts.ttl }));
    env = childEnv(leases, opts.envPrefix);
  } catch (err) {
    await revokeAll(leases);
    throw err;
  }
  if (early) {
    await revokeAll(leases);
    process.exit(128 + constants.signals[early]);
  }
  for (const lease of leases)
    lease.on('expiring', ({ expiresAt, reason }: { expiresAt: Date; reason: string }) =>
      process.stderr.write(
        `credbroker exec: ${lease.id} will not be renewed again (${reason}); it ends at ${expiresAt.toISOString()}\n`,
      ),
    );

  const started = spawn(command, args, { stdio: 'inherit', env });
  running.child = started;
  const status = await new Promise<number>((resolve) => {
    started.once('error', (err: NodeJS.ErrnoException) => {
      process.stderr.write(`credbroker exec: cannot run ${command}: ${err.code ?? err.message}\n`);
      resolve(err.code === 'ENOENT' ? 127 : 126);
    });
    started.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)));
  });
  for (const [signal, handler] of handlers) process.off(signal, handler);
  await revokeAll(leases);
  await broker.close();
  process.exit(status);
}
