import { fetch, type Dispatcher } from 'undici';
import { clientTlsFromEnv, tlsDispatcher, tlsHint, type ClientTls } from './client-tls.js';

/** A small Vault-API client for the CLI: address, token and TLS from the environment, errors as text. */
/** A Vault answer's body: its shape depends on the path, and each command reads the fields it needs. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
export type AnswerBody = any;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
    readonly body: unknown,
    message?: string,
  ) {
    super(message ?? (errors.length ? errors.join('\n') : `HTTP ${status}`));
  }
}

/**
 * Which of the three reasons a 403 has: no token sent, a token the broker does not know (or no
 * longer: expired, revoked), or a policy that does not allow the path. The broker adds Vault's
 * "invalid token" to the errors of the second; the first is known here.
 */
function deniedMessage(errors: string[], tokenSet: boolean, method: string, path: string): string {
  if (!tokenSet) return 'permission denied: no token set (set CREDBROKER_TOKEN or run credbroker login)';
  if (errors.includes('invalid token'))
    return 'permission denied: the token is unknown, expired or revoked (run credbroker login for a new one)';
  return `permission denied: the token's policies do not allow ${method} ${path}`;
}

export interface ClientOptions {
  address?: string;
  token?: string;
  tls?: ClientTls;
}

export function clientFromEnv(env: NodeJS.ProcessEnv = process.env): ApiClient {
  const address = env.CREDBROKER_ADDR || env.VAULT_ADDR || 'http://127.0.0.1:8200';
  const token = env.CREDBROKER_TOKEN || env.VAULT_TOKEN;
  const tls = clientTlsFromEnv(env);
  if (tls.skipVerify)
    process.stderr.write(
      "WARNING: CREDBROKER_SKIP_VERIFY is set: the broker's certificate is NOT verified, so anyone on the network path can impersonate it and read your token and credentials. Use CREDBROKER_CACERT instead.\n",
    );
  return new ApiClient({ address, token, tls });
}

export class ApiClient {
  private readonly dispatcher: Dispatcher | undefined;

  constructor(private readonly opts: ClientOptions) {
    this.dispatcher = opts.tls ? tlsDispatcher(opts.tls) : undefined;
    let url: URL;
    try {
      url = new URL(opts.address ?? '');
    } catch {
      throw new Error(`CREDBROKER_ADDR is not a valid URL: "${opts.address}" (expected http://host:port)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`CREDBROKER_ADDR must be an http:// or https:// URL, not "${opts.address}"`);
    }
  }

  /** Whether requests carry a client certificate (for the cert auth method). */
  presentsCertificate(): boolean {
    return Boolean(this.opts.tls?.cert);
  }

  async request(method: 'GET' | 'PUT' | 'LIST', path: string, body?: unknown): Promise<AnswerBody> {
    return (await this.send(method, path, body)).body;
  }

  /** The answer's body (null for a 204) with its headers; an error status throws ApiError. */
  async send(
    method: 'GET' | 'PUT' | 'LIST',
    path: string,
    body?: unknown,
  ): Promise<{ body: AnswerBody; headers: Awaited<ReturnType<typeof fetch>>['headers'] }> {
    const url = new URL(`/v1/${path.replace(/^\/+/, '')}`, this.opts.address);
    const httpMethod = method === 'LIST' ? 'GET' : method;
    if (method === 'LIST') url.searchParams.set('list', 'true');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.opts.token) headers['x-vault-token'] = this.opts.token;
    let res: Awaited<ReturnType<typeof fetch>>;
    try {
      res = await fetch(url, {
        method: httpMethod,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(
        `cannot reach credbroker at ${this.opts.address}: ${cause?.code ?? cause?.message ?? (err as Error).message}${tlsHint(cause?.code)}`,
      );
    }
    if (res.status === 204) return { body: null, headers: res.headers };
    const text = await res.text();
    let parsed: AnswerBody;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      throw new ApiError(res.status, [`unexpected non-JSON answer (HTTP ${res.status})`], null);
    }
    const errors: string[] = Array.isArray(parsed?.errors) ? parsed.errors : [];
    if (res.status === 403 && errors.includes('permission denied')) {
      throw new ApiError(
        res.status,
        errors,
        parsed,
        deniedMessage(errors, Boolean(this.opts.token), method, url.pathname),
      );
    }
    if (!res.ok) throw new ApiError(res.status, errors, parsed);
    return { body: parsed, headers: res.headers };
  }
}
