import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isMap, isScalar, isSeq, parse, parseAllDocuments, visit, type Document } from 'yaml';
import { parseConfig } from '../../src/config/load.js';
import {
  DEPLOY,
  KUBERNETES,
  ROOT,
  kubectl,
  kubectlFound,
  kustomizationDirs,
  ofKind,
  one,
  problemsOf,
  rel,
  render,
  schemaProblems,
  strictDocuments,
  yamlFiles,
  type K8sObject,
} from './deploy-render.js';

/**
 * Every YAML file under deploy/ must parse for the tools that will read it: a strict YAML 1.2
 * parser here, and kubectl (sigs.k8s.io/yaml, a YAML 1.1 parser) for the Kubernetes manifests;
 * every kustomization renders, and every object it renders is valid for the Kubernetes API.
 */
const FILES = yamlFiles(DEPLOY);
const KUSTOMIZATIONS = kustomizationDirs();

interface Kustomization {
  resources?: string[];
  configMapGenerator?: { name: string; files?: string[] }[];
}
const kustomizationOf = (dir: string): Kustomization =>
  parse(readFileSync(join(KUBERNETES, dir, 'kustomization.yaml'), 'utf8'));

/** Files a configMapGenerator reads (`key=path` or `path`): data, not manifests. */
const GENERATOR_FILES = KUSTOMIZATIONS.flatMap((dir) =>
  (kustomizationOf(dir).configMapGenerator ?? []).flatMap((g) =>
    (g.files ?? []).map((f) => join(KUBERNETES, dir, f.split('=').pop()!)),
  ),
);
const MANIFESTS = FILES.filter(
  (f) => f.startsWith(`${KUBERNETES}/`) && !f.endsWith('/kustomization.yaml') && !GENERATOR_FILES.includes(f),
);

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

/**
 * A plain integer with a leading zero (`defaultMode: 0440`) is octal to YAML 1.1 (kubectl: 288)
 * and decimal to YAML 1.2 (440): write file modes in decimal, or quote them where a string is meant.
 */
function leadingZeroIntegers(doc: Document.Parsed): string[] {
  const found: string[] = [];
  visit(doc, {
    Scalar(_key, node) {
      if (node.type === 'PLAIN' && typeof node.source === 'string' && /^[-+]?0[0-9]+$/.test(node.source))
        found.push(node.source);
    },
  });
  return found;
}

const docsOf = (file: string) => strictDocuments(readFileSync(file, 'utf8'));

describe('deploy/ YAML, strict YAML 1.2', () => {
  it('finds the manifests and kustomizations (a moved directory must not pass by testing nothing)', () => {
    expect(KUSTOMIZATIONS).toEqual([
      'base',
      'etl/common',
      'etl/init-container',
      'etl/sidecar',
      'overlays/dev',
      'overlays/production',
    ]);
    expect(MANIFESTS.map(rel)).toEqual(
      expect.arrayContaining([
        'deploy/kubernetes/base/deployment.yaml',
        'deploy/kubernetes/base/network-policy.yaml',
        'deploy/kubernetes/etl/init-container/job.yaml',
        'deploy/kubernetes/etl/sidecar/job.yaml',
      ]),
    );
    expect(GENERATOR_FILES.map(rel).sort()).toEqual([
      'deploy/kubernetes/base/broker-config.yaml',
      'deploy/kubernetes/etl/common/agent.yaml',
    ]);
    expect(FILES.map(rel)).toContain('deploy/credbroker.example.yaml');
  });

  it.each(FILES.map(rel))('%s parses with no error or warning', (file) => {
    const docs = docsOf(join(ROOT, file));
    expect(docs.length).toBeGreaterThan(0);
    expect(problemsOf(docs)).toEqual([]);
  });

  it.each(FILES.map(rel))(
    '%s quotes every flow-collection value with a character YAML 1.1 parsers read differently',
    (file) => {
      expect(docsOf(join(ROOT, file)).flatMap(unquotedFlowScalars)).toEqual([]);
    },
  );

  it.each(FILES.map(rel))('%s writes no integer with a leading zero (octal to YAML 1.1 only)', (file) => {
    expect(docsOf(join(ROOT, file)).flatMap(leadingZeroIntegers)).toEqual([]);
  });
});

// The only condition under which these are skipped, and it is said in the suite's name.
describe.skipIf(!kubectlFound)(
  `deploy/kubernetes with kubectl${kubectlFound ? '' : ' (SKIPPED: kubectl is not installed on this machine)'}`,
  () => {
    it.each(KUSTOMIZATIONS)('the kustomization in %s lists every manifest of its directory', (dir) => {
      const listedFiles = (kustomizationOf(dir).resources ?? []).filter((r) => /\.ya?ml$/.test(r));
      const inDir = MANIFESTS.filter((f) => dirname(f) === join(KUBERNETES, dir)).map((f) =>
        relative(join(KUBERNETES, dir), f),
      );
      expect([...listedFiles].sort()).toEqual(inDir.sort());
    });

    /** kind/name of what a kustomization must render: its files, its generators, its bases'. */
    function expectedObjects(dir: string): string[] {
      const k = kustomizationOf(dir);
      return [
        ...(k.resources ?? []).flatMap((r) =>
          /\.ya?ml$/.test(r)
            ? parseAllDocuments(readFileSync(join(KUBERNETES, dir, r), 'utf8'))
                .map((d) => d.toJS())
                .filter(Boolean)
                .map((o) => `${o.kind}/${o.metadata.name}`)
            : expectedObjects(join(dir, r)),
        ),
        ...(k.configMapGenerator ?? []).map((g) => `ConfigMap/${g.name}`),
      ];
    }

    it.each(KUSTOMIZATIONS)('`kubectl kustomize deploy/kubernetes/%s` builds, with every object it lists', (dir) => {
      const built = render(dir).map((o) => `${o.kind}/${o.metadata.name}`);
      // A generated ConfigMap's name ends in a hash of its content.
      const unhashed = built.map((n) => (n.startsWith('ConfigMap/') ? n.replace(/-[a-z0-9]{10}$/, '') : n));
      expect(unhashed.sort()).toEqual(expectedObjects(dir).sort());
    });

    it.each(KUSTOMIZATIONS)(
      'every object %s renders is valid against the Kubernetes OpenAPI schema, with no unknown field',
      async (dir) => {
        const objects = render(dir);
        expect(objects.length).toBeGreaterThan(0);
        for (const object of objects) {
          expect({ object: `${object.kind}/${object.metadata.name}`, problems: await schemaProblems(object) }).toEqual({
            object: `${object.kind}/${object.metadata.name}`,
            problems: [],
          });
        }
      },
    );

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

describe('deploy/cert-manager', () => {
  it('the Certificate is valid against cert-manager’s schema and writes the Secret the broker mounts', async () => {
    const [certificate] = docsOf(join(DEPLOY, 'cert-manager/certificate.yaml')).map((d) => d.toJS() as K8sObject);
    expect(await schemaProblems(certificate!)).toEqual([]);
    expect(certificate!.spec.secretName).toBe('credbroker-tls');
    expect(certificate!.spec.dnsNames).toContain('credbroker.credbroker.svc');
  });
});

const BROKER_BUILDS = ['base', 'overlays/dev', 'overlays/production'];

/** The broker config from the rendered ConfigMap that the Deployment mounts at --config. */
function brokerPieces(dir: string) {
  const objects = render(dir);
  const deployment = one(objects, 'Deployment', 'credbroker');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const configPath = container.args[container.args.indexOf('--config') + 1];
  const configMount = container.volumeMounts.find((m: K8sObject) => m.mountPath === configPath);
  const configVolume = pod.volumes.find((v: K8sObject) => v.name === configMount?.name);
  const configMap = one(objects, 'ConfigMap', 'credbroker-config');
  expect(configVolume?.configMap?.name).toBe(configMap.metadata.name);
  const configText: string = configMap.data[configMount.subPath];
  return { objects, deployment, pod, container, configText, config: parse(configText) };
}

describe.skipIf(!kubectlFound)(
  `the broker's manifests${kubectlFound ? '' : ' (SKIPPED: kubectl is not installed on this machine)'}`,
  () => {
    it('the broker config in the ConfigMap parses strictly, and the broker’s own loader accepts it', () => {
      const { configText } = brokerPieces('base');
      expect(problemsOf(strictDocuments(configText))).toEqual([]);
      // ${file:…} refs point into the pod's volumes: stand in env refs for them, and a value for every env ref.
      const asEnvRefs = configText.replace(/\$\{file:[^}]+\}/g, '${env:MOUNTED_FILE}');
      const env = new Proxy({}, { get: (_t, key) => (typeof key === 'string' ? 'x'.repeat(48) : undefined) });
      const config = parseConfig(asEnvRefs, env);
      expect(Object.keys(config.mounts)).toContain('warehouse');
    });

    it.each(BROKER_BUILDS)('%s: liveness does not depend on the lease store; readiness does', (dir) => {
      const { container } = brokerPieces(dir);
      expect(container.livenessProbe.httpGet.path).toBe('/v1/sys/broker/live');
      expect(container.readinessProbe.httpGet.path).toBe('/v1/sys/health');
    });

    it.each(BROKER_BUILDS)(
      '%s: everything speaks https: the listener has a certificate, probes and clients use https',
      (dir) => {
        const { config, container, pod, objects } = brokerPieces(dir);
        expect(config.listen.tls).toMatchObject({ cert_file: expect.any(String), key_file: expect.any(String) });
        expect(container.livenessProbe.httpGet.scheme).toBe('HTTPS');
        expect(container.readinessProbe.httpGet.scheme).toBe('HTTPS');
        const tlsMount = container.volumeMounts.find((m: { mountPath: string }) =>
          config.listen.tls.cert_file.startsWith(`${m.mountPath}/`),
        );
        const volume = pod.volumes.find((v: { name: string }) => v.name === tlsMount?.name);
        expect(volume?.secret?.secretName).toBe('credbroker-tls');
        // Every URL in every rendered object of every build is https, but the agent's own health
        // endpoint on the pod's loopback.
        const urls = KUSTOMIZATIONS.flatMap((k) => [...JSON.stringify(render(k)).matchAll(/\bhttps?:\/\/[^\s"',}]+/g)])
          .map(([url]) => url)
          .filter((url) => !url.startsWith('http://127.0.0.1:'));
        expect(urls.length).toBeGreaterThan(3);
        for (const url of urls) expect(url).toMatch(/^https:\/\//);
        expect(objects.length).toBeGreaterThan(0);
      },
    );

    it.each(BROKER_BUILDS)(
      '%s: non-root, read-only, no privilege escalation, no capabilities, RuntimeDefault',
      (dir) => {
        const { pod, container } = brokerPieces(dir);
        expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
        expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
        expect(container.securityContext).toEqual({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
        expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
        expect(container.resources.limits).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
      },
    );

    it('base runs 2 replicas, overlays change replicas, resources and image', () => {
      const replicas = BROKER_BUILDS.map((d) => brokerPieces(d).deployment.spec.replicas);
      expect(replicas).toEqual([2, 1, 3]);
      const images = BROKER_BUILDS.map((d) => brokerPieces(d).container.image);
      expect(new Set(images).size).toBe(3);
      const limits = BROKER_BUILDS.map((d) => JSON.stringify(brokerPieces(d).container.resources));
      expect(new Set(limits).size).toBe(3);
    });

    it.each(BROKER_BUILDS)('%s: secrets are references only, and every ref of the config is wired to one', (dir) => {
      const { objects, config, container, pod } = brokerPieces(dir);
      const values = JSON.stringify(config); // the config's values, not its comments
      expect(ofKind(objects, 'Secret')).toEqual([]);
      expect(config.root_token).toMatch(/^\$\{file:/);
      expect(config.audit.hmac_key).toMatch(/^\$\{file:/);
      expect(config.store.url).toMatch(/\$\{env:/);
      for (const [, name] of values.matchAll(/\$\{env:([^}]+)\}/g)) {
        const env = container.env.find((e: K8sObject) => e.name === name);
        expect({ name, ref: env?.valueFrom?.secretKeyRef?.name }).toEqual({ name, ref: expect.any(String) });
        expect(env.value).toBeUndefined();
      }
      for (const [, path] of values.matchAll(/\$\{file:([^}]+)\}/g)) {
        const mount = container.volumeMounts.find((m: K8sObject) => path!.startsWith(`${m.mountPath}/`));
        const volume = pod.volumes.find((v: K8sObject) => v.name === mount?.name);
        expect({ path, secret: volume?.secret?.secretName }).toEqual({ path, secret: expect.any(String) });
      }
    });

    it.each(BROKER_BUILDS)(
      '%s: the Service, the PodDisruptionBudget and the NetworkPolicy select the broker’s pods and port',
      (dir) => {
        const { objects, deployment, container, config } = brokerPieces(dir);
        const labels = deployment.spec.template.metadata.labels;
        const port = container.ports.find((p: K8sObject) => p.containerPort === config.listen.port);
        expect(port).toBeDefined();
        const service = one(objects, 'Service', 'credbroker');
        expect(labels).toMatchObject(service.spec.selector);
        expect(service.spec.ports[0].targetPort).toBe(port.name);
        const pdb = one(objects, 'PodDisruptionBudget', 'credbroker');
        expect(labels).toMatchObject(pdb.spec.selector.matchLabels);
        expect(pdb.spec.maxUnavailable).toBe(1);
        const policy = one(objects, 'NetworkPolicy', 'credbroker');
        expect(labels).toMatchObject(policy.spec.podSelector.matchLabels);
        expect(policy.spec.policyTypes).toEqual(['Ingress', 'Egress']);
        expect(policy.spec.ingress.flatMap((r: K8sObject) => r.ports.map((p: K8sObject) => p.port))).toEqual([
          config.listen.port,
        ]);
        const egress = policy.spec.egress.flatMap((r: K8sObject) =>
          r.ports.map((p: K8sObject) => `${p.protocol}/${p.port}`),
        );
        const storePort = Number(new URL(config.store.url.replace(/\$\{[^}]+\}/g, 'x')).port);
        const targetPort = Number(new URL(config.mounts.warehouse.connection_url.replace(/\$\{[^}]+\}/g, 'x')).port);
        expect(egress).toEqual(
          expect.arrayContaining(['UDP/53', 'TCP/53', `TCP/${storePort}`, `TCP/${targetPort}`, 'TCP/443']),
        );
      },
    );
  },
);

// Keep the helpers honest: the rules above must catch the defects they were written for.
describe('the YAML rules', () => {
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

  it('catches a file mode written in octal, and accepts it in decimal or quoted', () => {
    expect(strictDocuments('secret: { defaultMode: 0440 }\n').flatMap(leadingZeroIntegers)).toEqual(['0440']);
    expect(strictDocuments('secret: { defaultMode: 288 }\nmode: "0440"\n').flatMap(leadingZeroIntegers)).toEqual([]);
  });

  it('the schema check finds a wrong type and a misspelt field', async () => {
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p' },
      spec: {
        containers: [{ name: 'c', image: 'i', ports: [{ containerPort: 'https' }] }],
        securityContext: { runAsNonroot: true },
      },
    };
    const problems = await schemaProblems(pod);
    expect(problems.join('\n')).toMatch(/containerPort must be integer/);
    expect(problems).toContain('/spec/securityContext/runAsNonroot: unknown field');
  });
});
