import { readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEPLOY, kubectlFound, one, render, type K8sObject } from './deploy-render.js';

/**
 * The ETL Jobs are wired so that they work end to end: the agent (init container or sidecar) and
 * the job container share an in-memory volume, the files the agent writes belong to the job's uid,
 * the pod logs in as the identity the broker's auth role binds, and every client trusts the CA.
 */
const VARIANTS = ['etl/init-container', 'etl/sidecar'] as const;

/** The agent config in exactly the shape the agent is implemented against (issue 13). */
const AGENT_CONFIG = {
  broker: { address: 'https://credbroker.credbroker.svc:8200', ca_file: '/etc/credbroker-ca/ca.crt' },
  auth: { mount: 'kubernetes', role: 'etl', jwt_file: '/var/run/secrets/tokens/credbroker' },
  pod_uid: '${env:POD_UID}',
  state_file: '/secrets/.credbroker-agent.json',
  health: { address: '127.0.0.1:8201' },
  leases: [
    {
      name: 'warehouse',
      path: 'warehouse/creds/etl-reader',
      ttl: '2h',
      files: [
        { path: '/secrets/pg.env', format: 'env', mode: '0440', uid: 1000, gid: 1000 },
        { path: '/secrets/pgpass', format: 'pgpass', mode: '0400', uid: 1000, gid: 1000 },
      ],
    },
  ],
};

function pieces(variant: (typeof VARIANTS)[number]) {
  const objects = render(variant);
  const job = one(objects, 'Job');
  const pod = job.spec.template.spec;
  const agent = pod.initContainers.find((c: K8sObject) => c.args?.[0] === 'agent');
  const main = pod.containers[0];
  const configPath: string = agent.args[agent.args.indexOf('--config') + 1];
  const configMount = agent.volumeMounts.find((m: K8sObject) => m.mountPath === dirname(configPath));
  const configVolume = pod.volumes.find((v: K8sObject) => v.name === configMount?.name);
  const configMap = one(objects, 'ConfigMap', 'credbroker-agent');
  expect(configVolume?.configMap?.name).toBe(configMap.metadata.name);
  const agentConfig = parse(configMap.data[posix.basename(configPath)]);
  const broker = parse(one(render('base'), 'ConfigMap', 'credbroker-config').data['config.yaml']);
  return { objects, job, pod, agent, main, agentConfig, broker };
}

/** The mount of `container` whose mountPath holds `path`, and the pod volume behind it. */
function mountFor(pod: K8sObject, container: K8sObject, path: string) {
  const mount = (container.volumeMounts ?? []).find((m: K8sObject) => path.startsWith(`${m.mountPath}/`));
  return { mount, volume: pod.volumes.find((v: K8sObject) => v.name === mount?.name) };
}

const runAs = (pod: K8sObject, container: K8sObject) => ({
  uid: container.securityContext?.runAsUser ?? pod.securityContext?.runAsUser,
  gid: container.securityContext?.runAsGroup ?? pod.securityContext?.runAsGroup,
});

describe.skipIf(!kubectlFound)(
  `the ETL Jobs' wiring${kubectlFound ? '' : ' (SKIPPED: kubectl is not installed on this machine)'}`,
  () => {
    it.each(VARIANTS)('%s: the agent config is the one the agent reads, from the mounted ConfigMap', (variant) => {
      expect(pieces(variant).agentConfig).toEqual(AGENT_CONFIG);
    });

    it('the init container runs --once and exits; the sidecar stays (native sidecar) and gates the job on /ready', () => {
      const once = pieces('etl/init-container').agent;
      expect(once.args).toEqual(['agent', '--once', '--config', '/etc/credbroker-agent/agent.yaml']);
      expect(once.restartPolicy).toBeUndefined();
      const { agent: sidecar, agentConfig } = pieces('etl/sidecar');
      expect(sidecar.args).toEqual(['agent', '--config', '/etc/credbroker-agent/agent.yaml']);
      expect(sidecar.restartPolicy).toBe('Always');
      for (const probe of [sidecar.startupProbe, sidecar.readinessProbe]) {
        expect(probe.exec.command.join(' ')).toContain(`http://${agentConfig.health.address}/ready`);
      }
    });

    it.each(VARIANTS)(
      '%s: every file and the state file are on one in-memory volume, written by the agent, read-only for the job',
      (variant) => {
        const { pod, agent, main, agentConfig } = pieces(variant);
        const paths = [
          agentConfig.state_file,
          ...agentConfig.leases.flatMap((l: K8sObject) => l.files.map((f: K8sObject) => f.path)),
        ];
        const volumes = new Set<string>();
        for (const path of paths) {
          const byAgent = mountFor(pod, agent, path);
          const byJob = mountFor(pod, main, path);
          expect({ path, agent: byAgent.mount?.readOnly ?? false, job: byJob.mount?.readOnly }).toEqual({
            path,
            agent: false,
            job: true,
          });
          expect(byAgent.volume).toBe(byJob.volume);
          expect(byAgent.volume.emptyDir).toMatchObject({ medium: 'Memory' });
          volumes.add(byAgent.volume.name);
        }
        expect(volumes.size).toBe(1);
      },
    );

    it.each(VARIANTS)(
      '%s: the files belong to the uid the job runs as, which the agent runs as too, and nobody else reads them',
      (variant) => {
        const { pod, agent, main, agentConfig } = pieces(variant);
        const job = runAs(pod, main);
        expect(runAs(pod, agent)).toEqual(job);
        expect(pod.securityContext.fsGroup).toBe(job.gid);
        expect(pod.securityContext.runAsNonRoot).toBe(true);
        for (const file of agentConfig.leases.flatMap((l: K8sObject) => l.files)) {
          const mode = Number.parseInt(file.mode, 8);
          expect({ path: file.path, uid: file.uid, gid: file.gid }).toEqual({ path: file.path, ...job });
          expect(mode & 0o400).toBe(0o400); // the owner reads it
          expect(mode & 0o227).toBe(0); // nobody writes it, the world does not read it
        }
      },
    );

    it.each(VARIANTS)('%s: the job container gets a complete connection from those files', (variant) => {
      const { main, agentConfig } = pieces(variant);
      const files = agentConfig.leases[0].files;
      const pgpass = files.find((f: K8sObject) => f.format === 'pgpass');
      const env = files.find((f: K8sObject) => f.format === 'env');
      expect(main.env).toContainEqual({ name: 'PGPASSFILE', value: pgpass.path });
      // The env file (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE) is sourced with
      // set -a, so each PG* variable reaches psql's environment.
      const script = [...(main.command ?? []), ...(main.args ?? [])].join('\n');
      expect(script).toMatch(new RegExp(`set -a; \\. ${env.path.replace(/\./g, '\\.')}; set \\+a`));
    });

    it.each(VARIANTS)('%s: the pod logs in as the identity the broker’s auth role binds', (variant) => {
      const { job, pod, agent, agentConfig, broker } = pieces(variant);
      const role = broker.auth[agentConfig.auth.mount].roles[agentConfig.auth.role];
      expect(role.bound_claims).toEqual({
        '/kubernetes.io/namespace': job.metadata.namespace,
        '/kubernetes.io/serviceaccount/name': pod.serviceAccountName,
      });
      const serviceAccount = one(render(variant), 'ServiceAccount', pod.serviceAccountName);
      expect(serviceAccount.metadata.namespace).toBe(job.metadata.namespace);
      const { volume } = mountFor(pod, agent, agentConfig.auth.jwt_file);
      const token = volume.projected.sources[0].serviceAccountToken;
      expect(token.path).toBe(posix.basename(agentConfig.auth.jwt_file));
      expect(role.bound_audiences).toContain(token.audience);
      const lease = agentConfig.leases[0].path;
      expect(role.token_policies.flatMap((p: string) => broker.policies[p]).map((r: K8sObject) => r.path)).toContain(
        lease,
      );
      expect(broker.mounts[lease.split('/')[0]].roles[lease.split('/')[2]]).toBeDefined();
      expect(agent.env).toContainEqual({ name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } });
    });

    it.each(VARIANTS)('%s: the broker is reached over https at its Service, trusting a mounted CA', (variant) => {
      const { pod, agent, agentConfig } = pieces(variant);
      const base = render('base');
      const service = one(base, 'Service', 'credbroker');
      const address = new URL(agentConfig.broker.address);
      expect(address.protocol).toBe('https:');
      expect(address.hostname).toBe(`${service.metadata.name}.${service.metadata.namespace}.svc`);
      expect(Number(address.port)).toBe(service.spec.ports[0].port);
      const caFile = agent.env.find((e: K8sObject) => e.name === 'CREDBROKER_CACERT').value;
      expect(caFile).toBe(agentConfig.broker.ca_file);
      const { volume } = mountFor(pod, agent, caFile);
      expect(volume?.configMap?.name).toBe('credbroker-ca');
      // The certificate cert-manager issues for the broker names that host.
      const certificate = parse(readFileSync(join(DEPLOY, 'cert-manager/certificate.yaml'), 'utf8'));
      expect(certificate.spec.dnsNames).toContain(address.hostname);
    });

    it.each(VARIANTS)(
      '%s: both containers run restricted: no escalation, no capabilities, read-only root',
      (variant) => {
        const { pod, agent, main } = pieces(variant);
        expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
        for (const c of [agent, main]) {
          expect(c.securityContext).toEqual({
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
          });
          expect(c.resources.limits).toMatchObject({ memory: expect.any(String) });
        }
      },
    );
  },
);
