import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import type { JwksServer } from './jwks-server.js';

export interface KubeApiServer {
  /** https://127.0.0.1:PORT */
  readonly url: string;
  readonly jwksUrl: string;
  /** PEM of the throwaway CA that signed the server's certificate. */
  readonly caFile: string;
  /** A file holding the bearer token the server requires (the broker's reviewer token). */
  readonly tokenFile: string;
  /** TokenReviews answered so far, and the bearer each came with. */
  readonly reviews: { token: string; audiences: string[] | undefined; bearer: string | undefined }[];
  /** Requests refused for a missing or wrong bearer token. */
  readonly unauthorized: number;
  /** The pod behind this token was deleted: reviews of it say authenticated: false. */
  deletePodOf(jwt: string): void;
  /** Make the TokenReview endpoint answer this status until reset with undefined. */
  failReviewsWith(status: number | undefined): void;
  /** The username reviews answer, by default the token's sub. */
  answerUsername(username: string | undefined): void;
  close(): Promise<void>;
}

/** A throwaway CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI. */
function throwawayPki(dir: string): { ca: string; key: string; cert: string } {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=credbroker test cluster CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(
    join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n',
  );
  run(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '1',
    '-extfile',
    'ext.cnf',
  );
  return {
    ca: join(dir, 'ca.crt'),
    key: readFileSync(join(dir, 'server.key'), 'utf8'),
    cert: readFileSync(join(dir, 'server.crt'), 'utf8'),
  };
}

/**
 * A local HTTPS server that speaks the two Kubernetes API calls a broker makes: the cluster's
 * service-account JWKS (GET /openid/v1/jwks) and TokenReview (POST
 * /apis/authentication.k8s.io/v1/tokenreviews). Both require a bearer token, as a cluster does.
 * The signing keys are those of `keys` (a JwksServer), so its tokens verify here.
 */
export async function startKubeApiServer(keys: JwksServer, opts: { bearer?: string } = {}): Promise<KubeApiServer> {
  const dir = mkdtempSync(join(tmpdir(), 'credbroker-kube-api-'));
  const pki = throwawayPki(dir);
  const bearer = opts.bearer ?? `reviewer-${Math.random().toString(36).slice(2)}`;
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${bearer}\n`);
  const reviews: KubeApiServer['reviews'] = [];
  const deletedPods = new Set<string>();
  let unauthorized = 0;
  let failStatus: number | undefined;
  let username: string | undefined;

  const server = https.createServer({ key: pki.key, cert: pki.cert }, (req, res) => {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const presented = req.headers.authorization?.startsWith('Bearer ') ? req.headers.authorization.slice(7) : undefined;
    if (presented !== bearer) {
      unauthorized++;
      return send(401, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401 });
    }
    const path = new URL(req.url ?? '/', 'https://localhost').pathname;
    if (req.method === 'GET' && path === '/openid/v1/jwks')
      return send(200, { keys: keys.kids().map((kid) => keys.publicJwk(kid)) });
    if (req.method === 'POST' && path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          spec: { token: string; audiences?: string[] };
        };
        reviews.push({ token: review.spec.token, audiences: review.spec.audiences, bearer: presented });
        if (failStatus !== undefined) return send(failStatus, { kind: 'Status', status: 'Failure', code: failStatus });
        const claims = decodeJwt(review.spec.token) as {
          sub?: string;
          'kubernetes.io'?: { pod?: { name?: string; uid?: string } };
        };
        const pod = claims['kubernetes.io']?.pod;
        if (!pod?.uid || deletedPods.has(pod.uid)) {
          return send(201, {
            apiVersion: 'authentication.k8s.io/v1',
            kind: 'TokenReview',
            status: { authenticated: false, error: 'pod does not exist' },
          });
        }
        send(201, {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          status: {
            authenticated: true,
            user: {
              username: username ?? claims.sub,
              uid: 'sa-uid',
              groups: ['system:serviceaccounts'],
              extra: {
                'authentication.kubernetes.io/pod-name': [pod.name ?? ''],
                'authentication.kubernetes.io/pod-uid': [pod.uid],
              },
            },
            audiences: review.spec.audiences ?? [],
          },
        });
      });
      return;
    }
    send(404, { kind: 'Status', code: 404 });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    jwksUrl: `${url}/openid/v1/jwks`,
    caFile: pki.ca,
    tokenFile,
    reviews,
    get unauthorized() {
      return unauthorized;
    },
    deletePodOf(jwt) {
      const uid = (decodeJwt(jwt) as { 'kubernetes.io'?: { pod?: { uid?: string } } })['kubernetes.io']?.pod?.uid;
      if (!uid) throw new Error('kube-apiserver: token names no pod');
      deletedPods.add(uid);
    },
    failReviewsWith(status) {
      failStatus = status;
    },
    answerUsername(name) {
      username = name;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        rmSync(dir, { recursive: true, force: true });
      }),
  };
}
