import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { randomSecret } from '../../src/random.js';

/**
 * The production path for the bench: workloads log in with a JWT (a pinned ES256 key here) and
 * use a broker token, and every request is audited to a file (fail closed), as in production.
 */
export async function workloadAuth() {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const auditDir = mkdtempSync(join(tmpdir(), 'credbroker-bench-audit-'));
  const config = {
    auth: {
      k8s: {
        type: 'kubernetes',
        jwt_validation_pubkeys: [await exportSPKI(keys.publicKey)],
        roles: { bench: { bound_audiences: ['credbroker'], token_policies: ['bench'], token_ttl: '1h' } },
      },
    },
    policies: { bench: [{ path: '+/creds/+', capabilities: ['read', 'update'] }] },
    audit: { hmac_key: '${env:BENCH_AUDIT_KEY}', file: { path: join(auditDir, 'audit.jsonl') } },
  };
  const env = { BENCH_AUDIT_KEY: randomSecret() };
  /** A broker token for the bench's workload, by logging in at the broker. */
  const login = async (url: string): Promise<string> => {
    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256' })
      .setAudience('credbroker')
      .setSubject('system:serviceaccount:bench:loader')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(keys.privateKey);
    const res = await fetch(`${url}/v1/auth/k8s/login`, {
      method: 'PUT',
      body: JSON.stringify({ role: 'bench', jwt }),
    });
    if (!res.ok) throw new Error(`bench login failed: HTTP ${res.status} ${await res.text()}`);
    return ((await res.json()) as { auth: { client_token: string } }).auth.client_token;
  };
  return { config, env, login };
}
