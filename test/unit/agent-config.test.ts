import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AgentConfigError, parseAgentConfig } from '../../src/agent/config.js';
import { goFieldsToHandlebars, renderFile } from '../../src/agent/file-content.js';
import { idempotencyKey } from '../../src/agent/lease-keeper.js';

const base = (lease: string, top = '') =>
  [
    'auth: { mount: kubernetes, role: etl, jwt_file: /var/run/secrets/token }',
    top,
    'leases:',
    '  - name: warehouse',
    '    path: warehouse/creds/etl-reader',
    lease,
  ].join('\n');
const files = '    files:\n      - { path: /secrets/pg.env, format: env }';

const errorOf = (text: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    parseAgentConfig(text, env);
  } catch (err) {
    expect(err).toBeInstanceOf(AgentConfigError);
    return (err as Error).message;
  }
  throw new Error('the config was accepted');
};

describe('agent config', () => {
  it('fills the defaults: mode 0600, pod_uid from the environment ref, the state file beside the first file', () => {
    const config = parseAgentConfig(base(files, 'pod_uid: ${env:POD_UID}'), { POD_UID: 'b1e4-77' });
    expect(config.pod_uid).toBe('b1e4-77');
    expect(config.state_file).toBe('/secrets/.credbroker-agent.json');
    expect(config.leases[0]!.files[0]).toMatchObject({ mode: 0o600 });
    expect(config.leases[0]!.files[0]!.uid).toBeUndefined();
  });

  it.each([
    ['    files:\n      - { path: /s/a, format: env, mode: 0440 }', 'leases.0.files.0.mode: mode is a quoted string'],
    [
      '    files:\n      - { path: /s/a, format: env, mode: "0948" }',
      'leases.0.files.0.mode: mode is a string of octal',
    ],
    ['    files:\n      - { path: /s/a, format: yaml }', 'leases.0.files.0.format: unknown format'],
    ['    files:\n      - { path: /s/a }', 'leases.0.files.0: give exactly one of format and template'],
    ['    files:\n      - { path: /s/a, template: "{{#if .x}}" }', 'leases.0.files.0.template:'],
    ['    files:\n      - { path: s/a, format: env }', 'leases.0.files.0.path: must be an absolute path'],
    [`${files}\n    on_rotate: { signal: SIGNOPE, pid_file: /run/app.pid }`, 'leases.0.on_rotate'],
    [`${files}\n    ttl: soon`, 'leases.0.ttl'],
    [`${files}\n    colour: blue`, 'colour'],
  ])('refuses %j naming the key', (lease, message) => {
    expect(errorOf(base(lease))).toContain(message);
  });

  it('names a missing environment variable', () => {
    expect(errorOf(base(files, 'pod_uid: ${env:POD_UID}'))).toContain(
      'pod_uid: environment variable POD_UID is not set',
    );
  });
});

describe('templates', () => {
  it('translates Go-style fields for Handlebars, leaving its block syntax alone', () => {
    expect(goFieldsToHandlebars('{{ .host }}:{{.port}} {{#if .ssl}}on{{/if}} {{ . }}')).toBe(
      '{{ host }}:{{port}} {{#if ssl}}on{{/if}} {{ this }}',
    );
  });

  it('renders values raw (no HTML escaping), and a field the credential lacks is an error naming the field only', () => {
    const envelope = { lease_id: 'db/creds/r/x', lease_duration: 60, renewable: true, data: { password: `p&<'"x` } };
    expect(renderFile(envelope, { template: 'password={{ .password }}' })).toBe(`password=p&<'"x`);
    expect(() => renderFile(envelope, { template: '{{ .username }}' })).toThrow(/"username" not defined/);
    try {
      renderFile(envelope, { template: '{{ .username }}' });
    } catch (err) {
      expect((err as Error).message).not.toContain(envelope.data.password);
    }
  });
});

it('the idempotency key is <pod_uid>/<name>, with the rotation number after it', () => {
  expect(idempotencyKey('pod-1', 'warehouse', 0)).toBe('pod-1/warehouse');
  expect(idempotencyKey('pod-1', 'warehouse', 3)).toBe('pod-1/warehouse/3');
});

it('accepts the ETL Jobs’ agent config in deploy/ as it is mounted (both variants share it)', () => {
  const text = readFileSync(new URL('../../deploy/kubernetes/etl/common/agent.yaml', import.meta.url), 'utf8');
  const config = parseAgentConfig(text, { POD_UID: '0b7e1a52-5d1f-4c2e-9a57-3f0d2c1b4e6a' });
  expect(config.leases.map((l) => l.files.map((f) => [f.path, f.mode.toString(8), f.uid, f.gid]))).toEqual([
    [
      ['/secrets/pg.env', '440', 1000, 1000],
      ['/secrets/pgpass', '400', 1000, 1000],
    ],
  ]);
  expect(config.health?.address).toBe('127.0.0.1:8201');
});
