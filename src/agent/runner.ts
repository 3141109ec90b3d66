import { readFileSync } from 'node:fs';
import { clientTlsFromEnv } from '../client/tls.js';
import { Broker } from '../sdk/broker.js';
import type { AgentLog } from './agent-log.js';
import type { AgentConfig } from './config.js';
import { startHealthServer, type HealthServer } from './health-server.js';
import { LeaseKeeper } from './lease-keeper.js';
import { readState, writeState, type AgentState, type HeldLease } from './state-file.js';

/** How often the sidecar checks its token, so the SDK logs in again before it expires (at 2/3 of its life). */
const TOKEN_CHECK_MS = 30_000;

const readSecretFile = (path: string, what: string) => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new Error(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
};

function brokerFor(config: AgentConfig): Broker {
  const tls = {
    ...clientTlsFromEnv(),
    ...(config.broker.ca_file ? { ca: readSecretFile(config.broker.ca_file, 'CA file') } : {}),
  };
  const auth = config.auth;
  return new Broker({
    ...(config.broker.address ? { addr: config.broker.address } : {}),
    tls,
    ...('token_file' in auth
      ? { token: readSecretFile(auth.token_file, 'token file') }
      : { auth: { mount: auth.mount, role: auth.role, jwtFile: auth.jwt_file } }),
  });
}

/** Logs in now (a JWT login, or a check of the token), so a bad login fails first and says so. */
async function logIn(broker: Broker, config: AgentConfig): Promise<void> {
  try {
    await broker.request('GET', 'auth/token/lookup-self');
  } catch (err) {
    const as =
      'token_file' in config.auth ? 'with the token file' : `as ${config.auth.role} (auth/${config.auth.mount})`;
    throw new Error(`cannot log in to ${broker.address} ${as}: ${(err as Error).message}`);
  }
}

/** The state file, rewritten after each change, one write at a time. */
class StateBook {
  #writing: Promise<void> = Promise.resolve();
  constructor(
    readonly path: string,
    readonly state: AgentState,
  ) {}

  record(name: string, held: HeldLease | undefined): Promise<void> {
    if (held) this.state.leases[name] = held;
    else delete this.state.leases[name];
    const snapshot = structuredClone(this.state);
    this.#writing = this.#writing.catch(() => undefined).then(() => writeState(this.path, snapshot));
    return this.#writing;
  }
}

/**
 * `credbroker agent`: logs in, takes (or adopts) each configured lease and writes its files. With
 * `once` (an init container) it exits then, leaving the leases alive for the sidecar or their TTL.
 * Otherwise (a sidecar) it keeps them: renews, rotates before max TTL, and revokes them all on
 * SIGTERM/SIGINT. Resolves with the exit code; rejects with a one-line message when it cannot start.
 */
export async function runAgent(config: AgentConfig, opts: { once: boolean; log: AgentLog }): Promise<number> {
  const { log, once } = opts;
  // Listened to from the start: a SIGTERM while starting stops the agent once it holds its leases.
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
    if (once) return;
    const onSignal = (signal: NodeJS.Signals) => {
      log(`${signal}: revoking every lease and exiting`);
      resolve(signal);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  const health: HealthServer | undefined =
    !once && config.health ? await startHealthServer(config.health.address) : undefined;
  const broker = brokerFor(config);
  const keepers: LeaseKeeper[] = [];
  try {
    await logIn(broker, config);
    const book = new StateBook(config.state_file, await readState(config.state_file));
    for (const spec of config.leases) {
      const keeper = new LeaseKeeper({
        broker,
        podUid: config.pod_uid,
        spec,
        keep: !once,
        log,
        onHeld: (name, held) => book.record(name, held),
      });
      keepers.push(keeper);
      await keeper.start(book.state.leases[spec.name]);
    }
  } catch (err) {
    // The leases already held stay (alive until their TTL, adopted at the next start).
    await Promise.all(keepers.map((k) => k.stop(false)));
    await health?.close();
    await broker.close();
    throw err;
  }
  if (once) {
    await Promise.all(keepers.map((k) => k.stop(false)));
    await broker.close();
    log(`wrote the files of ${keepers.length} lease(s); leaving them alive`);
    return 0;
  }
  health?.setReady(true);
  log(`ready: holding ${keepers.length} lease(s)`);
  const tokenCheck = setInterval(() => {
    broker.request('GET', 'auth/token/lookup-self').catch((err: Error) => log(`token check failed: ${err.message}`));
  }, TOKEN_CHECK_MS);
  await stopSignal;
  clearInterval(tokenCheck);
  health?.setReady(false);
  const outcomes = await Promise.allSettled(keepers.map((k) => k.stop(true)));
  let failed = 0;
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'rejected') {
      failed++;
      const lease = keepers[i]!.lease;
      log(`could not revoke ${lease?.id ?? config.leases[i]!.name}: ${(outcome.reason as Error).message}`);
    }
  });
  await health?.close();
  await broker.close();
  return failed ? 1 : 0;
}
