import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { connect } from 'node:tls';
import { join } from 'node:path';
import nodeVault from 'node-vault';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { startBroker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { baseTestConfig, ROOT_TOKEN, startTestBroker } from '../support/broker.js';
import { CLI, runCli, storeConfigFile } from '../support/cli.js';
import { dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, loginAs, pgUrl } from '../support/pg.js';
import { tlsFetch, tlsFixture, type TlsFixture } from '../support/tls.js';
import { sleep, waitUntil } from '../support/wait.js';

const PREFIX = 'ltls';
let tls: TlsFixture;
let broker: Awaited<ReturnType<typeof startTestBroker>>;
let target: Awaited<ReturnType<typeof freshTargetDatabase>>;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  tls = await tlsFixture();
  target = await freshTargetDatabase(PREFIX);
  broker = await startTestBroker({
    storeDatabase: await freshStoreDatabase(),
    targetDatabase: target.database,
    prefix: PREFIX,
    roles: { reader: { member_of: [target.group] } },
    tls: tls.listen,
  });
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await broker?.close();
  await dropRolesWithPrefix(PREFIX);
});

/** The serial number of the certificate a new TLS handshake with `port` presents. */
function presentedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerX509Certificate()!.serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

/** The target's URL with its password as the ${env:} reference storeConfigFile's environment resolves. */
function targetUrlWithRef(): string {
  const url = new URL(pgUrl(target.database));
  url.password = 'PASSWORD_REF';
  return url.href.replace('PASSWORD_REF', '${env:CLI_TEST_PG_PASSWORD}');
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

describe('the listener over https', () => {
  it('serves the CLI with CREDBROKER_CACERT: the credential it writes logs in to PostgreSQL', async () => {
    expect(broker.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const run = await runCli(['creds', 'db/reader', '--format', 'json'], {
      env: { ...process.env, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN, CREDBROKER_CACERT: tls.caFile },
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const client = await loginAs(JSON.parse(run.stdout).data ?? JSON.parse(run.stdout));
    expect((await client.query('SELECT count(*)::int AS n FROM public.items')).rows[0].n).toBe(2);
    await client.end();
  });

  it('the CLI without the CA is refused by its own verification, with the variable to set', async () => {
    const run = await runCli(['creds', 'db/reader'], {
      env: { ...process.env, CREDBROKER_ADDR: broker.url, CREDBROKER_TOKEN: ROOT_TOKEN, CREDBROKER_CACERT: '' },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE.*set CREDBROKER_CACERT/);
    expect(run.stdout).toBe('');
  });

  it('VAULT_CACERT works as the fallback name, and a missing CA file is named', async () => {
    const ok = await runCli(['mounts', 'check', 'db'], {
      env: { ...process.env, VAULT_ADDR: broker.url, VAULT_TOKEN: ROOT_TOKEN, VAULT_CACERT: tls.caFile },
    });
    expect(ok.code).toBe(0);
    const missing = await runCli(['mounts', 'check', 'db'], {
      env: { ...process.env, CREDBROKER_ADDR: broker.url, CREDBROKER_CACERT: join(tls.dir, 'nope.pem') },
    });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/CREDBROKER_CACERT: cannot read .*nope\.pem: ENOENT/);
  });

  it('a Vault client library (node-vault) reaches it with the CA over its kept-alive agent', async () => {
    const vault = nodeVault({
      endpoint: broker.url,
      token: ROOT_TOKEN,
      requestOptions: { ca: tls.ca.certPem },
    });
    const health = await vault.health();
    expect(health.sealed).toBe(false);
    const issued = await vault.read('db/creds/reader');
    expect(issued.lease_id).toMatch(/^db\/creds\/reader\//);
    const untrusting = nodeVault({ endpoint: broker.url, token: ROOT_TOKEN });
    await expect(untrusting.read('db/creds/reader')).rejects.toThrow(/unable to verify|self.signed|certificate/i);
  });

  it('plain HTTP to the https port gets no answer a client could mistake for the API', async () => {
    const res = await fetch(broker.url.replace('https:', 'http:') + '/v1/sys/health').catch((err: Error) => err);
    expect(res instanceof Error || res.status >= 400).toBe(true);
  });

  it('a fetch without the CA fails its own verification', async () => {
    const err = await tlsFetch(undefined)(`${broker.url}/v1/sys/health`).catch((e: { cause?: { code?: string } }) => e);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });
});

describe('listen.tls at start', () => {
  const start = (tlsConfig: Record<string, unknown>, address = '127.0.0.1') =>
    startBroker(
      configSchema.parse({
        ...baseTestConfig(broker.config.store.url.split('/').pop()!),
        listen: { address, port: 0, tls: tlsConfig },
      }),
      { log: createLogger('silent'), reaper: false },
    );

  it('refuses a missing file, naming the key and the path', async () => {
    await expect(start({ ...tls.listen, key_file: join(tls.dir, 'missing-key.pem') })).rejects.toThrow(
      /listen\.tls\.key_file: cannot read .*missing-key\.pem: ENOENT/,
    );
  });

  it('refuses a key that does not belong to the certificate', async () => {
    const other = await tls.issue('other', { commonName: 'other' });
    await expect(start({ cert_file: tls.server.certFile, key_file: other.keyFile })).rejects.toThrow(
      /the key in .*other-key\.pem does not belong to the certificate in .*server\.pem/,
    );
  });

  it('refuses a file that is not a certificate', async () => {
    const junk = join(tls.dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    await expect(start({ cert_file: junk, key_file: tls.server.keyFile })).rejects.toThrow(
      /listen\.tls\.cert_file: .*junk\.pem is not a PEM certificate/,
    );
  });

  it('with client_ca_file, a client without a certificate from that CA is refused at the handshake', async () => {
    const mtls = await start({ ...tls.listen, client_ca_file: tls.caFile });
    try {
      const client = await tls.issue('mtls-client', { commonName: 'pipeline', usage: 'client' });
      const ok = await tlsFetch(tls.ca.certPem, client)(`${mtls.url}/v1/sys/health`);
      expect(ok.status).toBe(200);
      const stranger = await tlsFixture('another CA');
      const foreign = await stranger.issue('foreign', { commonName: 'pipeline', usage: 'client' });
      for (const cert of [undefined, foreign]) {
        const refused = await tlsFetch(tls.ca.certPem, cert)(`${mtls.url}/v1/sys/health`).catch((e: Error) => e);
        expect(refused).toBeInstanceOf(Error);
      }
    } finally {
      await mtls.close();
    }
  });

  it('min_version TLSv1.3 refuses a TLS 1.2 client', async () => {
    const strict = await start({ ...tls.listen, min_version: 'TLSv1.3' });
    try {
      const refused = await new Promise<Error | null>((resolve) => {
        const socket = connect(
          { host: '127.0.0.1', port: strict.port, ca: tls.ca.certPem, servername: 'localhost', maxVersion: 'TLSv1.2' },
          () => {
            socket.end();
            resolve(null);
          },
        );
        socket.once('error', resolve);
      });
      expect(refused?.message).toMatch(/protocol version|alert/i);
      expect(await presentedSerial(strict.port, tls.ca.certPem)).toBe(tls.server.serialNumber);
    } finally {
      await strict.close();
    }
  });

  it('plain HTTP beyond loopback starts with a warning; on loopback, without one', async () => {
    const lines: string[] = [];
    const sink = { write: (line: string) => void lines.push(line) } as unknown as NodeJS.WritableStream;
    for (const address of ['0.0.0.0', '127.0.0.1']) {
      const plain = await startBroker(
        configSchema.parse({
          ...baseTestConfig(broker.config.store.url.split('/').pop()!),
          listen: { address, port: 0 },
        }),
        { log: createLogger('warn', sink), reaper: false },
      );
      await plain.close();
    }
    const warnings = lines.filter((l) => l.includes('plain HTTP beyond loopback'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!).address).toBe('0.0.0.0');
  });
});

describe('SIGHUP with a new certificate (credbroker server)', () => {
  it('the next handshake presents the new certificate and no request in flight fails', async () => {
    const dir = tls.dir;
    const certFile = join(dir, 'live.pem');
    const keyFile = join(dir, 'live-key.pem');
    copyFileSync(tls.server.certFile, certFile);
    copyFileSync(tls.server.keyFile, keyFile);
    const port = await freePort();
    const store = broker.config.store.url.split('/').pop()!;
    const { path, env } = storeConfigFile(
      dir,
      store,
      [
        `listen:`,
        `  port: ${port}`,
        `  tls:`,
        `    cert_file: ${certFile}`,
        `    key_file: ${keyFile}`,
        `mounts:`,
        `  db:`,
        `    type: postgres`,
        `    connection_url: ${targetUrlWithRef()}`,
        `    username_prefix: ${PREFIX}`,
        `    roles:`,
        `      reader:`,
        `        member_of: [${target.group}]`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'server', '--config', path], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stderr = '';
    child.stderr!.on('data', (c) => (stderr += c));
    const url = `https://127.0.0.1:${port}`;
    const get = tlsFetch(tls.ca.certPem);
    await waitUntil(async () => (await get(`${url}/v1/sys/health`).catch(() => null))?.status === 200, {
      timeoutMs: 20_000,
      what: 'credbroker server to answer over https',
    });
    expect(await presentedSerial(port, tls.ca.certPem)).toBe(tls.server.serialNumber);

    // Load on kept-alive connections (each loop reuses the agent's sockets) across the reload.
    let stop = false;
    const failures: string[] = [];
    let answered = 0;
    const loops = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const res = await get(`${url}/v1/db/creds/reader`, { headers: { 'x-vault-token': ROOT_TOKEN } }).catch(
          (e: Error) => e,
        );
        if (res instanceof Error) failures.push(res.message);
        else if (res.status !== 200) failures.push(`HTTP ${res.status}`);
        else answered++;
        if (!(res instanceof Error)) await res.body?.cancel().catch(() => undefined);
      }
    });
    await waitUntil(() => answered >= 20, { timeoutMs: 20_000, what: '20 answers before the reload' });
    const renewed = await tls.issue('renewed', { commonName: 'localhost', dnsNames: ['localhost', '127.0.0.1'] });
    copyFileSync(renewed.certFile, certFile);
    copyFileSync(renewed.keyFile, keyFile);
    child.kill('SIGHUP');
    await waitUntil(async () => (await presentedSerial(port, tls.ca.certPem)) === renewed.serialNumber, {
      timeoutMs: 10_000,
      what: 'the renewed certificate in a new handshake',
    });
    const afterReload = answered;
    await waitUntil(() => answered >= afterReload + 20, { timeoutMs: 20_000, what: '20 answers after the reload' });
    stop = true;
    await Promise.all(loops);
    expect(failures).toEqual([]);
    expect(new X509Certificate(renewed.certPem).serialNumber).toBe(renewed.serialNumber);

    // A bad file on the next SIGHUP keeps the certificate in use.
    writeFileSync(keyFile, 'broken\n');
    child.kill('SIGHUP');
    await sleep(1000);
    expect(child.exitCode).toBeNull();
    expect((await get(`${url}/v1/sys/health`)).status).toBe(200);
    expect(await presentedSerial(port, tls.ca.certPem)).toBe(renewed.serialNumber);
    child.kill('SIGTERM');
  }, 90_000);
});
