import { createWriteStream } from 'node:fs';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema, type BrokerConfig } from '../../src/config/schema.js';
import type { EngineRegistry } from '../../src/engines.js';
import { createLogger } from '../../src/log.js';
import { pgUrl } from './pg.js';
import { sweepLogPath } from './secret-recorder.js';

export const ROOT_TOKEN = 'test-root-token-0123456789';

export interface TestBrokerOptions {
  storeDatabase: string;
  targetDatabase: string;
  prefix: string;
  roles: Record<string, Record<string, unknown>>;
  mount?: Record<string, unknown>;
  reaper?: Record<string, unknown>;
  /** Run the reaper on its timer; by default tests call reapOnce() themselves. */
  scheduleReaper?: boolean;
  engineTimeout?: number;
  /** The broker's engines (a wrapped or failing one); every engine by default. */
  engines?: EngineRegistry;
  /** An audit section (e.g. a file sink, for the reliability checker's invariant (f)). */
  audit?: Record<string, unknown>;
  /** listen.tls (cert_file, key_file, client_ca_file…): the broker serves https; see test/support/tls.ts. */
  tls?: Record<string, unknown>;
  /** Auth mounts and policies, as in the config. */
  auth?: Record<string, unknown>;
  policies?: Record<string, unknown>;
  /** An alerts section (a webhook at a receiver in the test, detector thresholds). */
  alerts?: Record<string, unknown>;
  /** The orphan sweep's top-level section (schedule, grace). */
  sweep?: Record<string, unknown>;
}

/** What every test broker shares: loopback on a free port, a store, the root token, quiet logs. */
export function baseTestConfig(storeDatabase: string) {
  return {
    listen: { address: '127.0.0.1', port: 0 },
    store: { url: pgUrl(storeDatabase), max_connections: 10 },
    root_token: ROOT_TOKEN,
    log_level: 'silent',
    engine_timeout: 5,
    reaper: { pending_grace: 30 },
  };
}

export function testConfig(opts: TestBrokerOptions): BrokerConfig {
  return configSchema.parse({
    ...baseTestConfig(opts.storeDatabase),
    engine_timeout: opts.engineTimeout ?? 5,
    reaper: { pending_grace: 30, ...opts.reaper },
    ...(opts.audit ? { audit: opts.audit } : {}),
    ...(opts.tls ? { listen: { address: '127.0.0.1', port: 0, tls: opts.tls } } : {}),
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.policies ? { policies: opts.policies } : {}),
    ...(opts.alerts ? { alerts: opts.alerts } : {}),
    ...(opts.sweep ? { sweep: opts.sweep } : {}),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(opts.targetDatabase),
        username_prefix: opts.prefix,
        ...opts.mount,
        roles: opts.roles,
      },
    },
  });
}

/** A real broker on a random loopback port: real HTTP server, real lease store, real target. */
export async function startTestBroker(opts: TestBrokerOptions): Promise<Broker & { config: BrokerConfig }> {
  const config = testConfig(opts);
  // Logged at the production level into the run's secret sweep, when one runs.
  const logPath = sweepLogPath('broker');
  const log = logPath ? createLogger('info', createWriteStream(logPath, { flags: 'a' })) : createLogger('silent');
  const broker = await startBroker(config, { log, reaper: opts.scheduleReaper ?? false, engines: opts.engines });
  return { ...broker, config };
}

/** Calls the broker's HTTP API as a Vault client would. */
export async function api(
  broker: { url: string },
  method: string,
  path: string,
  body?: unknown,
  token: string | null = ROOT_TOKEN,
) {
  const headers: Record<string, string> = {};
  if (token !== null) headers['x-vault-token'] = token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${broker.url}/v1/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, body: json, headers: res.headers };
}
