import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterAccessFor, IN_POD_CA_FILE, IN_POD_TOKEN_FILE } from '../../src/auth/cluster-client.js';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { startKubeApiServer, type KubeApiServer } from '../support/kube-apiserver.js';
import { freshStoreDatabase } from '../support/pg.js';

let keys: JwksServer;
let cluster: KubeApiServer;
let broker: Broker;

beforeAll(async () => {
  keys = await startJwksServer({ issuer: K8S_ISSUER });
  cluster = await startKubeApiServer(keys);
  const mount = (extra: Record<string, unknown>) => ({
    type: 'kubernetes',
    jwks_url: cluster.jwksUrl,
    bound_issuer: K8S_ISSUER,
    jwks_refresh_interval: 0,
    roles: { etl: kubernetesRole('etl', ['etl']) },
    ...extra,
  });
  const config = configSchema.parse({
    ...baseTestConfig(await freshStoreDatabase('k8sauth')),
    auth: {
      k8s: mount({ ca_file: cluster.caFile, bearer_token_file: cluster.tokenFile }),
      noca: mount({ bearer_token_file: cluster.tokenFile }),
      notoken: mount({ ca_file: cluster.caFile }),
      review: mount({ ca_file: cluster.caFile, bearer_token_file: cluster.tokenFile, token_reviewer: true }),
      reviewdown: mount({
        ca_file: cluster.caFile,
        bearer_token_file: cluster.tokenFile,
        token_reviewer: true,
        kubernetes_host: 'https://127.0.0.1:1',
      }),
    },
    policies: { etl: [{ path: 'db/creds/reader', capabilities: ['read'] }] },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await keys?.close();
});

const login = (mount: string, jwt: string) => api(broker, 'PUT', `auth/${mount}/login`, { role: 'etl', jwt }, null);
const token = () => keys.sign(kubernetesClaims({ namespace: 'etl' }));

describe("a cluster's /openid/v1/jwks, behind its own CA and a bearer token", () => {
  it('with ca_file and bearer_token_file, the keys are fetched and the login succeeds', async () => {
    const before = cluster.unauthorized;
    const res = await login('k8s', await token());
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.auth.metadata).toMatchObject({ namespace: 'etl', service_account_namespace: 'etl' });
    expect(cluster.unauthorized).toBe(before);
  });

  it('without the CA the certificate is not trusted: 502 (the key source), not a 400 blaming the token', async () => {
    const res = await login('noca', await token());
    expect(res.status, JSON.stringify(res.body)).toBe(502);
    expect(res.body.errors[0]).toMatch(/auth\/noca: cannot fetch the signing keys/);
  });

  it('without the bearer token the cluster answers 401: 502', async () => {
    const before = cluster.unauthorized;
    const res = await login('notoken', await token());
    expect(res.status, JSON.stringify(res.body)).toBe(502);
    expect(cluster.unauthorized).toBeGreaterThan(before);
  });
});

describe('token_reviewer: the API server confirms the token (its pod still exists)', () => {
  it('a live token is reviewed with the reviewer token and the role’s audiences, then logs in', async () => {
    const jwt = await token();
    const res = await login('review', jwt);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const review = cluster.reviews.find((r) => r.token === jwt);
    expect(review).toMatchObject({ audiences: ['credbroker'], bearer: expect.stringMatching(/^reviewer-/) });
  });

  it('a token whose pod was deleted is refused with 403, though its signature is still good', async () => {
    const jwt = await token();
    expect((await login('review', jwt)).status).toBe(200);
    cluster.deletePodOf(jwt);
    const res = await login('review', jwt);
    expect(res.status, JSON.stringify(res.body)).toBe(403);
    expect(res.body.auth ?? null).toBeNull();
    // The same token at a mount that does not review still logs in: the review is what refused it.
    expect((await login('k8s', jwt)).status).toBe(200);
  });

  it('a review naming another user than the token’s subject is refused with 403', async () => {
    cluster.answerUsername('system:serviceaccount:kube-system:admin');
    try {
      expect((await login('review', await token())).status).toBe(403);
    } finally {
      cluster.answerUsername(undefined);
    }
  });

  it('an API server answering 500, or not listening, is a 502', async () => {
    cluster.failReviewsWith(500);
    try {
      const res = await login('review', await token());
      expect(res.status, JSON.stringify(res.body)).toBe(502);
      expect(res.body.errors[0]).toMatch(/TokenReview .* answered HTTP 500/);
    } finally {
      cluster.failReviewsWith(undefined);
    }
    const down = await login('reviewdown', await token());
    expect(down.status, JSON.stringify(down.body)).toBe(502);
    expect(down.body.errors[0]).toMatch(/auth\/reviewdown: TokenReview at https:\/\/127.0.0.1:1 failed/);
  });

  it('a token that fails the local checks never reaches the API server', async () => {
    const jwt = await keys.sign(kubernetesClaims({ namespace: 'other' }));
    expect((await login('review', jwt)).status).toBe(400);
    expect(cluster.reviews.some((r) => r.token === jwt)).toBe(false);
  });
});

describe('defaults of a kubernetes mount', () => {
  it('use the in-pod CA and token when they exist and the cluster is the one the pod is in; nothing otherwise', () => {
    const all = () => true;
    const inCluster = { type: 'kubernetes', jwks_url: 'https://kubernetes.default.svc/openid/v1/jwks' };
    expect(clusterAccessFor(inCluster, all, {})).toEqual({
      caFile: IN_POD_CA_FILE,
      bearerTokenFile: IN_POD_TOKEN_FILE,
    });
    expect(
      clusterAccessFor({ type: 'kubernetes', jwks_url: 'https://10.96.0.1/openid/v1/jwks' }, all, {
        KUBERNETES_SERVICE_HOST: '10.96.0.1',
      }),
    ).toEqual({ caFile: IN_POD_CA_FILE, bearerTokenFile: IN_POD_TOKEN_FILE });
    expect(clusterAccessFor(inCluster, () => false, {})).toEqual({});
    expect(clusterAccessFor({ ...inCluster, ca_file: '/etc/ca.pem' }, all, {})).toEqual({
      caFile: '/etc/ca.pem',
      bearerTokenFile: IN_POD_TOKEN_FILE,
    });
    // A public issuer (EKS, GKE) must not receive the pod's token, and the cluster CA would not verify it.
    expect(
      clusterAccessFor(
        { type: 'kubernetes', oidc_discovery_url: 'https://oidc.eks.eu-west-1.amazonaws.com/id/ABC' },
        all,
        {},
      ),
    ).toEqual({});
    expect(
      clusterAccessFor({ type: 'kubernetes', jwks_url: 'http://kubernetes.default.svc/openid/v1/jwks' }, all, {}),
    ).toEqual({});
    expect(clusterAccessFor({ type: 'jwt', jwks_url: inCluster.jwks_url }, all, {})).toEqual({});
  });

  it('refuse config that would send the bearer token over http, or review tokens on a jwt mount', () => {
    const base = { ...baseTestConfig('x'), policies: {} };
    const problems = (auth: Record<string, unknown>) => {
      const result = configSchema.safeParse({ ...base, auth: { a: { roles: {}, ...auth } } });
      return result.success ? [] : result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(problems({ type: 'kubernetes', jwks_url: 'http://example/jwks', bearer_token_file: '/t' })).toEqual([
      expect.stringMatching(/^auth\.a\.jwks_url: must be https/),
    ]);
    expect(problems({ type: 'jwt', jwks_url: 'https://example/jwks', token_reviewer: true })).toEqual([
      expect.stringMatching(/^auth\.a\.token_reviewer: only a kubernetes mount/),
    ]);
  });
});
