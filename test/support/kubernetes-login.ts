import { SignJWT, exportSPKI, generateKeyPair } from 'jose';

const ISSUER = 'https://cluster.example';

/**
 * A `kubernetes` auth mount `k8s` with one role `etl` (the given policies), verifying tokens
 * against a key pair made here, and a login that signs a service-account token for it: the
 * identity is `system:serviceaccount:<namespace>:<name>`, with the namespace in its metadata
 * (`service_account_namespace`), as a projected token gives it.
 */
export async function kubernetesPubkeyAuth(policies: string[]): Promise<{
  auth: Record<string, unknown>;
  login(url: string, namespace: string, name: string): Promise<string>;
}> {
  const keys = await generateKeyPair('RS256', { extractable: true });
  return {
    auth: {
      k8s: {
        type: 'kubernetes',
        jwt_validation_pubkeys: [await exportSPKI(keys.publicKey)],
        bound_issuer: ISSUER,
        roles: { etl: { bound_audiences: ['credbroker'], token_policies: policies } },
      },
    },
    async login(url, namespace, name) {
      const jwt = await new SignJWT({
        'kubernetes.io/serviceaccount/namespace': namespace,
        'kubernetes.io/serviceaccount/service-account.name': name,
      })
        .setProtectedHeader({ alg: 'RS256' })
        .setIssuer(ISSUER)
        .setAudience('credbroker')
        .setSubject(`system:serviceaccount:${namespace}:${name}`)
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(keys.privateKey);
      const res = await fetch(`${url}/v1/auth/k8s/login`, {
        method: 'PUT',
        body: JSON.stringify({ role: 'etl', jwt }),
      });
      const body = (await res.json()) as { auth?: { client_token: string }; errors?: string[] };
      if (res.status !== 200 || !body.auth) throw new Error(`login ${res.status}: ${JSON.stringify(body.errors)}`);
      return body.auth.client_token;
    },
  };
}
