import { z } from 'zod';
import { PermissionDenied, TargetError, messageOf } from '../errors.js';
import type { ClusterClient } from './cluster-client.js';

/** What the API server answers (authentication.k8s.io/v1 TokenReview); only the fields used here. */
const tokenReviewResponse = z.object({
  status: z
    .object({
      authenticated: z.boolean().optional(),
      user: z
        .object({
          username: z.string().optional(),
          uid: z.string().optional(),
          extra: z.record(z.string(), z.array(z.string())).optional(),
        })
        .optional(),
      audiences: z.array(z.string()).optional(),
      error: z.string().optional(),
    })
    .optional(),
});

export interface ReviewedToken {
  username: string;
  extra: Record<string, string[]>;
}

/**
 * Asks the cluster's API server whether a service-account token is still good: a signature
 * alone cannot tell that the pod (or the service account) it was issued for is gone.
 */
export class TokenReviewer {
  constructor(
    private readonly mount: string,
    private readonly host: string,
    private readonly client: ClusterClient,
  ) {}

  /**
   * Resolves with the reviewed user when the API server says the token is authenticated for one
   * of `audiences` and names `expectedUsername`; PermissionDenied when it says otherwise;
   * TargetError (502) when it cannot be asked or answers something else.
   */
  async review(jwt: string, audiences: string[], expectedUsername: string | undefined): Promise<ReviewedToken> {
    const url = `${this.host.replace(/\/$/, '')}/apis/authentication.k8s.io/v1/tokenreviews`;
    const body = JSON.stringify({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token: jwt, audiences },
    });
    let res;
    try {
      res = await this.client.request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    } catch (err) {
      throw new TargetError(`auth/${this.mount}`, `TokenReview at ${new URL(url).origin} failed: ${messageOf(err)}`);
    }
    if (res.status !== 200 && res.status !== 201) {
      throw new TargetError(
        `auth/${this.mount}`,
        `TokenReview at ${new URL(url).origin} answered HTTP ${res.status}${res.status === 401 || res.status === 403 ? ' (may the reviewer token create tokenreviews?)' : ''}`,
      );
    }
    let parsed;
    try {
      parsed = tokenReviewResponse.parse(JSON.parse(res.body));
    } catch {
      throw new TargetError(
        `auth/${this.mount}`,
        `TokenReview at ${new URL(url).origin} answered something that is not a TokenReview`,
      );
    }
    const status = parsed.status ?? {};
    if (status.authenticated !== true) throw new PermissionDenied();
    const username = status.user?.username ?? '';
    if (expectedUsername !== undefined && username !== expectedUsername) throw new PermissionDenied();
    if (status.audiences && !status.audiences.some((a) => audiences.includes(a))) throw new PermissionDenied();
    return { username, extra: status.user?.extra ?? {} };
  }
}
