import { existsSync, readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { ConfigError, messageOf } from '../errors.js';

/** Where a pod finds its service account: the cluster CA and a token the kubelet keeps fresh. */
export const IN_POD_CA_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
export const IN_POD_TOKEN_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export interface ClusterAccess {
  /** PEM bundle trusted for the key source and the API server, instead of the public roots. */
  caFile?: string;
  /** Sent as `Authorization: Bearer`; read at each request, since the kubelet rotates it. */
  bearerTokenFile?: string;
}

/** Names of the in-cluster API server, as a pod sees it. */
const IN_CLUSTER_HOSTS = [
  'kubernetes',
  'kubernetes.default',
  'kubernetes.default.svc',
  'kubernetes.default.svc.cluster.local',
];

/**
 * The files a Kubernetes auth mount uses to reach its cluster: the configured ones, else the
 * in-pod service-account files when they exist, but only for a key source or API server inside
 * the cluster: the pod's token must not go to a public OIDC issuer (an EKS or GKE discovery URL),
 * and the cluster CA would not verify one. `exists` and `env` are injectable for tests.
 */
export function clusterAccessFor(
  config: {
    type: string;
    ca_file?: string | undefined;
    bearer_token_file?: string | undefined;
    jwks_url?: string | undefined;
    oidc_discovery_url?: string | undefined;
    kubernetes_host?: string | undefined;
  },
  exists: (path: string) => boolean = existsSync,
  env: NodeJS.ProcessEnv = process.env,
): ClusterAccess {
  const urls = [config.jwks_url, config.oidc_discovery_url, config.kubernetes_host].filter(
    (u): u is string => u !== undefined,
  );
  const inCluster = (url: string) => {
    const { protocol, hostname } = new URL(url);
    return (
      protocol === 'https:' &&
      (IN_CLUSTER_HOSTS.includes(hostname) ||
        (env.KUBERNETES_SERVICE_HOST !== undefined && hostname === env.KUBERNETES_SERVICE_HOST))
    );
  };
  const inPod = config.type === 'kubernetes' && urls.length > 0 && urls.every(inCluster);
  const caFile = config.ca_file ?? (inPod && exists(IN_POD_CA_FILE) ? IN_POD_CA_FILE : undefined);
  const bearerTokenFile =
    config.bearer_token_file ?? (inPod && exists(IN_POD_TOKEN_FILE) ? IN_POD_TOKEN_FILE : undefined);
  return { ...(caFile ? { caFile } : {}), ...(bearerTokenFile ? { bearerTokenFile } : {}) };
}

export interface ClusterResponse {
  status: number;
  body: string;
}

/**
 * HTTPS (or HTTP) requests to a cluster endpoint with its CA and bearer token. The CA is read
 * once, at construction (a missing file fails the start); the token at every request.
 */
export class ClusterClient {
  private readonly ca: string | undefined;

  constructor(
    private readonly name: string,
    private readonly access: ClusterAccess,
  ) {
    this.ca = access.caFile ? readConfigFile(name, 'ca_file', access.caFile) : undefined;
    if (access.bearerTokenFile) readConfigFile(name, 'bearer_token_file', access.bearerTokenFile);
  }

  /** Whether requests need this client rather than plain fetch. */
  get customized(): boolean {
    return this.ca !== undefined || this.access.bearerTokenFile !== undefined;
  }

  bearerToken(): string | undefined {
    return this.access.bearerTokenFile
      ? readConfigFile(this.name, 'bearer_token_file', this.access.bearerTokenFile)
      : undefined;
  }

  request(
    url: string,
    opts: {
      method: 'GET' | 'POST';
      headers?: Record<string, string>;
      body?: string;
      signal?: AbortSignal;
      timeoutMs?: number;
    },
  ): Promise<ClusterResponse> {
    const target = new URL(url);
    const token = this.bearerToken();
    // A bearer token never travels in clear text.
    if (token && target.protocol !== 'https:')
      return Promise.reject(new Error(`refusing to send the bearer token to ${target.origin} over ${target.protocol}`));
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...opts.headers,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    };
    if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
    const transport = target.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const options = {
        method: opts.method,
        headers,
        signal: opts.signal,
        timeout: opts.timeoutMs ?? 5000,
        ...(this.ca ? { ca: this.ca } : {}),
      };
      const onResponse = (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          // A JWKS or a TokenReview is a few KB; anything far larger is not one.
          if (size > 1_048_576) res.destroy(new Error('response over 1 MiB'));
          else chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      };
      const req = transport.request(target, options, onResponse);
      req.on('timeout', () =>
        req.destroy(
          Object.assign(new Error(`${target.origin} did not answer within ${options.timeout} ms`), {
            code: 'ETIMEDOUT',
          }),
        ),
      );
      req.on('error', reject);
      req.end(opts.body);
    });
  }

  /**
   * A fetch for jose's createRemoteJWKSet (its `customFetch`): jose 6 fetches with the global
   * fetch, which takes no CA; this one answers a WHATWG Response from a request made here.
   */
  fetchForJose = async (url: string, options: { headers: Headers; signal: AbortSignal }): Promise<Response> => {
    let res: ClusterResponse;
    try {
      res = await this.request(url, {
        method: 'GET',
        headers: Object.fromEntries(options.headers.entries()),
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal.aborted) throw Object.assign(new Error('JWKS fetch timed out'), { name: 'TimeoutError' });
      // Without a code, the mount reports the key source as down (502), as it does for fetch's own failures.
      throw new Error(`cannot fetch ${new URL(url).origin}: ${messageOf(err)}`);
    }
    return new Response(res.body, { status: res.status, headers: { 'content-type': 'application/json' } });
  };
}

function readConfigFile(mount: string, key: string, path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(
      `auth.${mount}.${key}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
    );
  }
}
