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

/** Logs in through `login`, the broker's request function without a token. */
type Login = (path: string, body: unknown) => Promise<AnswerBody>;

/** The share of a token's lifetime after which the next request logs in again first. */
const RELOGIN_AT = 2 / 3;

/**
 * The token to send: a fixed one, or one from a JWT login that is renewed by logging in again
 * once two thirds of its lifetime have passed (checked before each request, so no timer keeps a
 * process alive), and at once when the broker no longer knows it.
 */
export class TokenSource {
  #token: string | undefined;
  #refreshAt = Infinity;
  #login: Promise<string> | undefined;

  constructor(
    token: string | undefined,
    private readonly auth: JwtAuthOptions | undefined,
  ) {
    this.#token = token;
  }

  get canLogIn(): boolean {
    return this.auth !== undefined;
  }

  async token(login: Login): Promise<string | undefined> {
    if (!this.auth) return this.#token;
    if (this.#token && Date.now() < this.#refreshAt) return this.#token;
    return this.logIn(login);
  }

  /** Logs in now (one login at a time, shared by concurrent callers). */
  logIn(login: Login): Promise<string> {
    this.#login ??= this.#doLogIn(login).finally(() => (this.#login = undefined));
    return this.#login;
  }

  async #doLogIn(login: Login): Promise<string> {
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
    const answer = await login(`auth/${auth.mount}/login`, { role: auth.role, jwt });
    const token = answer?.auth?.client_token;
    if (typeof token !== 'string') throw new SdkConfigError(`auth/${auth.mount}/login answered without a token`);
    const seconds = Number(answer.auth.lease_duration);
    this.#token = token;
    this.#refreshAt = seconds > 0 ? started + seconds * 1000 * RELOGIN_AT : Infinity;
    return token;
  }
}
