import { readFile } from 'node:fs/promises';
import { SdkConfigError } from './errors.js';
import type { AnswerBody } from './transport.js';

/**
 * Log in with a JWT the workload already holds (a Kubernetes service-account token, a CI OIDC
 * token): `PUT /v1/auth/<mount>/login` with `{ role, jwt }`. The file is read again at every
 * login, as a projected service-account token is rotated in place by the kubelet.
 *
 * @example
 * ```ts
 * const broker = new Broker({
 *   auth: { mount: 'kubernetes', role: 'etl', jwtFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' },
 * });
 * ```
 */
export interface JwtAuthOptions {
  mount: string;
  role: string;
  jwtFile: string;
}

/**
 * The two calls a token source makes: a login without a token, and a renew-self with one.
 *
 * @example
 * ```ts
 * const calls: AuthCalls = { login: (path, body) => send('PUT', path, body), renewSelf: (token) => renew(token) };
 * ```
 */
export interface AuthCalls {
  login(path: string, body: unknown): Promise<AnswerBody>;
  renewSelf(token: string): Promise<AnswerBody>;
}

/** The share of a token's lifetime after which the next request renews it first. */
const REFRESH_AT = 2 / 3;

/**
 * The token to send: a fixed one, or one from a JWT login. A login's token is renewed
 * (`auth/token/renew-self`) once two thirds of its lifetime have passed, checked before each
 * request (so no timer keeps a process alive); renewing, not logging in again, because a token
 * that expires takes the leases taken with it along (Vault's rule, unless the auth role says
 * `revoke_leases_with_token: false`). A new login happens when the renewal is refused, or when the
 * token's max TTL leaves less than a third of its first lifetime, and at once when the broker no
 * longer knows the token.
 *
 * @example
 * ```ts
 * const tokens = new TokenSource(undefined, { mount: 'kubernetes', role: 'etl', jwtFile: '/var/run/secrets/token' });
 * ```
 */
export class TokenSource {
  #token: string | undefined;
  #firstSeconds = 0;
  #refreshAt = Infinity;
  #pending: Promise<string> | undefined;

  constructor(
    token: string | undefined,
    private readonly auth: JwtAuthOptions | undefined,
  ) {
    this.#token = token;
  }

  get canLogIn(): boolean {
    return this.auth !== undefined;
  }

  async token(calls: AuthCalls): Promise<string | undefined> {
    if (!this.auth) return this.#token;
    if (this.#token && Date.now() < this.#refreshAt) return this.#token;
    return this.#once(() => (this.#token ? this.#renewOrLogIn(calls, this.#token) : this.#logIn(calls)));
  }

  /** Logs in now (the broker no longer knows the token). */
  logIn(calls: AuthCalls): Promise<string> {
    return this.#once(() => this.#logIn(calls));
  }

  /** One login or renewal at a time, shared by concurrent callers. */
  #once(fn: () => Promise<string>): Promise<string> {
    this.#pending ??= fn().finally(() => (this.#pending = undefined));
    return this.#pending;
  }

  async #renewOrLogIn(calls: AuthCalls, token: string): Promise<string> {
    const started = Date.now();
    const answer = await calls.renewSelf(token).catch(() => null);
    const seconds = Number(answer?.auth?.lease_duration);
    if (!(seconds > 0) || seconds < this.#firstSeconds / 3) return this.#logIn(calls);
    this.#refreshAt = started + seconds * 1000 * REFRESH_AT;
    return token;
  }

  async #logIn(calls: AuthCalls): Promise<string> {
    const auth = this.auth!;
    let jwt: string;
    try {
      jwt = (await readFile(auth.jwtFile, 'utf8')).trim();
    } catch (err) {
      throw new SdkConfigError(
        `cannot read the JWT file ${auth.jwtFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
    const started = Date.now();
    const answer = await calls.login(`auth/${auth.mount}/login`, { role: auth.role, jwt });
    const token = answer?.auth?.client_token;
    if (typeof token !== 'string') throw new SdkConfigError(`auth/${auth.mount}/login answered without a token`);
    const seconds = Number(answer.auth.lease_duration);
    this.#token = token;
    this.#firstSeconds = seconds > 0 ? seconds : 0;
    this.#refreshAt = seconds > 0 ? started + seconds * 1000 * REFRESH_AT : Infinity;
    return token;
  }
}
