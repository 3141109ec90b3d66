import type {
  ConnectionPoolStats,
  HandleFacts,
  VerifyCheck,
  IssueRequest,
  Limiter,
  OwnedListing,
  RevokeHandle,
  IssueResponse,
  RenewRequest,
  RevokeRequest,
  Target,
} from '../engines.js';
import { CredentialDisabled, TargetError, TargetTimeout, messageOf } from '../errors.js';
import { timed } from '../timing.js';

const MAX_ERROR_LENGTH = 500;
const REDACTED = '[redacted]';

/** An error text fit to store and show: secrets replaced, control characters dropped, truncated. */
export function sanitizeError(message: string, secrets: Iterable<string> = []): string {
  let text = message;
  for (const secret of secrets) if (secret) text = text.split(secret).join(REDACTED);
  text = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' ');
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH - 1)}…` : text;
}

/** Hears each revocation's outcome as soon as it is final; `credentialDisabled` as in CredentialDisabled. */
export type RevokeResultListener = (index: number, error: string | null, credentialDisabled: boolean) => void;

/**
 * Wraps every engine call once, for every engine: a hard timeout, the time spent on the target,
 * and errors turned into a TargetError whose message has every secret the call registered
 * scrubbed out. The original error (which may quote a secret) is dropped, not kept as `cause`.
 */
export class GuardedTarget<Role> {
  constructor(
    readonly mount: string,
    private readonly target: Target<Role>,
    private readonly timeoutMs: number,
  ) {}

  plan = (req: Parameters<Target<Role>['plan']>[0]) => this.target.plan(req);

  renewable(role: Role): boolean {
    return this.target.renewable ? this.target.renewable(role) : typeof this.target.renew === 'function';
  }

  describe(handle: RevokeHandle): HandleFacts {
    return this.target.describe?.(handle) ?? { revocableBeforeExpiry: true };
  }

  /** The engine's own checks; an engine without any has nothing to check. */
  async verify(roles: Role[]): Promise<VerifyCheck[]> {
    if (!this.target.verify) return [];
    return this.call('verify', new Set(), () => this.target.verify!(roles));
  }

  async issue(req: Omit<IssueRequest<Role>, 'secrets'>): Promise<IssueResponse> {
    const secrets = new Set<string>();
    return this.call('issue', secrets, () => this.target.issue({ ...req, secrets: { add: (s) => secrets.add(s) } }));
  }

  async renew(req: RenewRequest<Role>): Promise<void> {
    if (!this.target.renew) return;
    await this.call('renew', new Set(), () => this.target.renew!(req));
  }

  async revoke(req: RevokeRequest): Promise<void> {
    await this.call('revoke', new Set(), () => this.target.revoke(req));
  }

  /**
   * One outcome per handle, in order: null for revoked, else a sanitized error message. Each
   * outcome also goes to `onResult` as soon as it is known (the engine's own reports as they
   * come); a timeout or a throw of the whole batch fails only the requests not reported yet.
   */
  async revokeMany(reqs: RevokeRequest[], slots: Limiter, onResult?: RevokeResultListener): Promise<(string | null)[]> {
    const results: (string | null | undefined)[] = reqs.map(() => undefined);
    const report = (index: number, error: string | null, credentialDisabled = false) => {
      if (!Number.isInteger(index) || index < 0 || index >= reqs.length || results[index] !== undefined) return;
      results[index] = error;
      onResult?.(index, error, credentialDisabled);
    };
    if (this.target.revokeMany) {
      const progress = {
        onResult: (index: number, error: Error | null) =>
          report(index, error ? sanitizeError(messageOf(error)) : null, error instanceof CredentialDisabled),
      };
      try {
        // The bound scales with the rounds the batch needs at its concurrency.
        const rounds = Math.ceil(reqs.length / slots.limit);
        const errors = await this.call(
          'revoke',
          new Set(),
          () => this.target.revokeMany!(reqs, slots, progress),
          this.timeoutMs * rounds,
        );
        errors.forEach((e, i) => report(i, e ? sanitizeError(messageOf(e)) : null));
        reqs.forEach((_, i) => report(i, 'the engine answered no outcome for this revocation'));
      } catch (err) {
        reqs.forEach((_, i) => report(i, messageOf(err)));
      }
    } else {
      await Promise.all(
        reqs.map((req, i) =>
          slots.run(() =>
            this.revoke(req).then(
              () => report(i, null),
              (err) => report(i, messageOf(err), err instanceof CredentialDisabled),
            ),
          ),
        ),
      );
    }
    return results as (string | null)[];
  }

  async revokeIssuedBefore(role: Role, before: Date): Promise<boolean> {
    if (!this.target.revokeIssuedBefore) return false;
    return this.call('revoke', new Set(), () => this.target.revokeIssuedBefore!(role, before));
  }

  /** The engine's objects for the orphan sweep; null where the engine cannot list them. */
  async listOwned(roles: Role[]): Promise<OwnedListing | null> {
    if (!this.target.listOwned) return null;
    return this.call('list', new Set(), () => this.target.listOwned!(roles));
  }

  connectionPool(): ConnectionPoolStats | undefined {
    return this.target.connectionPool?.();
  }

  close(): Promise<void> {
    return this.target.close();
  }

  private async call<T>(
    op: string,
    secrets: Set<string>,
    work: () => Promise<T>,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const running = work();
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const settled = running.then(
          () => undefined,
          () => undefined,
        );
        reject(new TargetTimeout(this.mount, `${op} timed out after ${timeoutMs} ms`, settled));
      }, timeoutMs);
    });
    try {
      return await timed('target', () => Promise.race([running, timeout]));
    } catch (err) {
      if (err instanceof TargetTimeout) throw err;
      const message = `${this.mount}: ${op} failed: ${sanitizeError(messageOf(err), secrets)}`;
      // Kept apart: the credential is harmless already, and the lease record says so.
      if (err instanceof CredentialDisabled) throw new CredentialDisabled(message);
      throw new TargetError(this.mount, message.slice(this.mount.length + 2));
    } finally {
      clearTimeout(timer);
    }
  }
}
