import { fetch, type Dispatcher } from 'undici';
import { tlsDispatcher, tlsHint, type ClientTls } from '../client/tls.js';
import { BrokerApiError, BrokerUnreachableError, LeaseInUseError, SdkConfigError } from './errors.js';

/**
 * A Vault API verb; `LIST` is sent as `GET …?list=true`.
 *
 * @example
 * ```ts
 * await broker.request('LIST', 'sys/leases/lookup/db/creds/reader');
 * ```
 */
export type Method = 'GET' | 'PUT' | 'LIST';

/**
 * A Vault answer's body: its shape depends on the path; each caller reads the fields it needs.
 *
 * @example
 * ```ts
 * const { data }: AnswerBody = await broker.request('PUT', 'sys/leases/lookup', { lease_id });
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
export type AnswerBody = any;

/**
 * One HTTP exchange with the broker's Vault API: no retries, no token logic; errors as SDK errors.
 *
 * @example
 * ```ts
 * const body = await new Transport('http://127.0.0.1:8200').send('GET', 'sys/health', undefined, {});
 * ```
 */
export class Transport {
  readonly #dispatcher: Dispatcher | undefined;

  constructor(
    readonly address: string,
    tls: ClientTls = {},
  ) {
    let url: URL;
    try {
      url = new URL(address);
    } catch {
      throw new SdkConfigError(`the broker address is not a valid URL: "${address}" (expected http(s)://host:port)`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new SdkConfigError(`the broker address must be an http:// or https:// URL, not "${address}"`);
    this.#dispatcher = tlsDispatcher(tls);
  }

  async send(
    method: Method,
    path: string,
    body: unknown,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<AnswerBody> {
    const url = new URL(`/v1/${path.replace(/^\/+/, '')}`, this.address);
    if (method === 'LIST') url.searchParams.set('list', 'true');
    let res: Awaited<ReturnType<typeof fetch>>;
    try {
      res = await fetch(url, {
        method: method === 'LIST' ? 'GET' : method,
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const reason = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new BrokerUnreachableError(this.address, `${reason}${tlsHint(cause?.code)}`, { cause: err });
    }
    const text = await res.text().catch(() => '');
    if (res.status === 204) return null;
    let parsed: AnswerBody = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      if (res.ok) throw new BrokerApiError(res.status, ['the broker answered with non-JSON'], method, path);
    }
    if (!res.ok) {
      const errors = Array.isArray(parsed?.errors) ? parsed.errors.map(String) : [];
      const inUse = parsed?.data?.lease_id;
      if (res.status === 409 && typeof inUse === 'string')
        throw new LeaseInUseError(errors, method, path, inUse, String(parsed.data.state ?? 'active'));
      throw new BrokerApiError(res.status, errors, method, path);
    }
    return parsed;
  }

  async close(): Promise<void> {
    await this.#dispatcher?.close();
  }
}
