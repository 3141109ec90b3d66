import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isMap, isScalar, isSeq, parse, parseAllDocuments, visit, type Document } from 'yaml';

/**
 * Every YAML file under deploy/ must parse for the tools that will read it: a strict YAML 1.2
 * parser here, and kubectl (sigs.k8s.io/yaml, a YAML 1.1 parser) for the Kubernetes manifests.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const KUBERNETES = join(DEPLOY, 'kubernetes');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

const FILES = yamlFiles(DEPLOY);
const MANIFESTS = FILES.filter((f) => f.startsWith(`${KUBERNETES}/`) && !f.endsWith('/kustomization.yaml'));
const rel = (f: string) => relative(ROOT, f);

function strictDocuments(text: string): Document.Parsed[] {
  return parseAllDocuments(text, {
    version: '1.2',
    strict: true,
    uniqueKeys: true,
    prettyErrors: true,
  }) as Document.Parsed[];
}

const problemsOf = (docs: Document.Parsed[]) => docs.flatMap((d) => [...d.errors, ...d.warnings].map((e) => e.message));

/**
 * Characters a plain scalar inside `{ … }` or `[ … ]` may carry in YAML 1.2 but that trip YAML 1.1
 * parsers such as kubectl's (`path: /x?a=1&b=2` does not parse there): quote such values.
 */
const FLOW_UNSAFE = /[?&*!|>'"%@`#]/;

function unquotedFlowScalars(doc: Document.Parsed): string[] {
  const found: string[] = [];
  visit(doc, {
    Scalar(_key, node, path) {
      const inFlow = path.some((p) => (isMap(p) || isSeq(p)) && p.flow);
      if (inFlow && node.type === 'PLAIN' && typeof node.source === 'string' && FLOW_UNSAFE.test(node.source))
        found.push(node.source);
    },
  });
  return found;
}

describe('deploy/ YAML, strict YAML 1.2', () => {
  it('finds the manifests (a moved directory must not pass by testing nothing)', () => {
    expect(MANIFESTS.map(rel)).toEqual(
      expect.arrayContaining(['deploy/kubernetes/broker.yaml', 'deploy/kubernetes/etl-job.yaml']),
    );
    expect(FILES.map(rel)).toContain('deploy/credbroker.example.yaml');
  });

  it.each(FILES.map(rel))('%s parses with no error or warning', (file) => {
    const docs = strictDocuments(readFileSync(join(ROOT, file), 'utf8'));
    expect(docs.length).toBeGreaterThan(0);
    expect(problemsOf(docs)).toEqual([]);
  });

  it.each(FILES.map(rel))(
    '%s quotes every flow-collection value with a character YAML 1.1 parsers read differently',
    (file) => {
      const docs = strictDocuments(readFileSync(join(ROOT, file), 'utf8'));
      expect(docs.flatMap(unquotedFlowScalars)).toEqual([]);
    },
  );

  it('the broker config embedded in the ConfigMap parses strictly too', () => {
    const docs = strictDocuments(readFileSync(join(KUBERNETES, 'broker.yaml'), 'utf8')).map((d) => d.toJS());
    const configMap = docs.find((d) => d?.kind === 'ConfigMap');
    expect(typeof configMap?.data?.['config.yaml']).toBe('string');
    const embedded = strictDocuments(configMap.data['config.yaml']);
    expect(problemsOf(embedded)).toEqual([]);
    expect(embedded[0]!.toJS()).toHaveProperty('mounts');
  });

  it('liveness does not depend on the lease store; readiness does', () => {
    const deployment = strictDocuments(readFileSync(join(KUBERNETES, 'broker.yaml'), 'utf8'))
      .map((d) => d.toJS())
      .find((d) => d?.kind === 'Deployment');
    const container = deployment.spec.template.spec.containers[0];
    expect(container.livenessProbe.httpGet.path).toBe('/v1/sys/broker/live');
    expect(container.readinessProbe.httpGet.path).toBe('/v1/sys/health');
  });

  it('everything speaks https: the listener has a certificate, probes and clients use https', () => {
    const docs = strictDocuments(readFileSync(join(KUBERNETES, 'broker.yaml'), 'utf8')).map((d) => d.toJS());
    const config = parse(docs.find((d) => d?.kind === 'ConfigMap').data['config.yaml']);
    expect(config.listen.tls).toMatchObject({ cert_file: expect.any(String), key_file: expect.any(String) });
    const deployment = docs.find((d) => d?.kind === 'Deployment');
    const container = deployment.spec.template.spec.containers[0];
    expect(container.livenessProbe.httpGet.scheme).toBe('HTTPS');
    expect(container.readinessProbe.httpGet.scheme).toBe('HTTPS');
    const tlsMount = container.volumeMounts.find((m: { mountPath: string }) =>
      config.listen.tls.cert_file.startsWith(`${m.mountPath}/`),
    );
    const volume = deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === tlsMount?.name);
    expect(volume?.secret?.secretName).toBe('credbroker-tls');
    const addresses = MANIFESTS.flatMap((f) => [
      ...readFileSync(f, 'utf8').matchAll(/(?:CREDBROKER|VAULT)_ADDR.*?((?:https?):\/\/\S+)/g),
    ]);
    expect(addresses.length).toBeGreaterThan(0);
    for (const [, url] of addresses) expect(url).toMatch(/^https:\/\//);
  });
});

const kubectlFound = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;

function kubectl(args: string[]) {
  const run = spawnSync('kubectl', args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

// The only condition under which these are skipped, and it is said in the suite's name.
describe.skipIf(!kubectlFound)(
  `deploy/kubernetes with kubectl${kubectlFound ? '' : ' (SKIPPED: kubectl is not installed on this machine)'}`,
  () => {
    it('the kustomization lists every manifest in the directory', () => {
      const kustomization = parse(readFileSync(join(KUBERNETES, 'kustomization.yaml'), 'utf8'));
      expect([...kustomization.resources].sort()).toEqual(MANIFESTS.map((f) => relative(KUBERNETES, f)).sort());
    });

    it('`kubectl kustomize deploy/kubernetes` builds, with every object of every manifest', () => {
      const run = kubectl(['kustomize', 'deploy/kubernetes']);
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      const built = parseAllDocuments(run.stdout).map((d) => d.toJS());
      const expected = MANIFESTS.flatMap((f) => parseAllDocuments(readFileSync(f, 'utf8')).map((d) => d.toJS())).filter(
        Boolean,
      );
      expect(built.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
        expected.map((o) => `${o.kind}/${o.metadata.name}`).sort(),
      );
    });

    // `kubectl create --dry-run=client -f` needs an API server even with --validate=false (it asks
    // one which resource each kind is). `annotate --local` decodes the file with the same file
    // reader and no server, so it is what can run here.
    it.each(MANIFESTS.map(rel))(
      '`kubectl annotate --local --dry-run=client -o yaml -f %s` decodes every object',
      (file) => {
        const run = kubectl([
          'annotate',
          '--local',
          '--dry-run=client',
          '-o',
          'yaml',
          '-f',
          file,
          'credbroker.test/parsed=true',
        ]);
        expect(run.stderr).toBe('');
        expect(run.status).toBe(0);
        const objects = parseAllDocuments(readFileSync(join(ROOT, file), 'utf8'))
          .map((d) => d.toJS())
          .filter(Boolean);
        for (const object of objects) expect(run.stdout).toContain(`name: ${object.metadata.name}`);
        expect(run.stdout.match(/credbroker\.test\/parsed: "true"/g)).toHaveLength(objects.length);
      },
    );
  },
);

// Keep the helpers honest: the rule above must catch the defect it was written for.
describe('the flow-scalar rule', () => {
  it('catches an unquoted query string in a flow mapping, and accepts it quoted', () => {
    const bad = strictDocuments(
      'probe: { httpGet: { path: /v1/sys/health?sealedcode=200&uninitcode=200, port: http } }\n',
    );
    expect(problemsOf(bad)).toEqual([]); // valid YAML 1.2 …
    expect(bad.flatMap(unquotedFlowScalars)).toEqual(['/v1/sys/health?sealedcode=200&uninitcode=200']); // … that kubectl cannot read
    expect(
      strictDocuments('probe: { httpGet: { path: "/v1/sys/health?a=1&b=2", port: http } }\n').flatMap(
        unquotedFlowScalars,
      ),
    ).toEqual([]);
    expect(isScalar(bad[0]!.getIn(['probe', 'httpGet', 'path'], true))).toBe(true);
  });
});
