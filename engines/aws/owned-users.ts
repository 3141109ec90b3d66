import { ListUsersCommand, type IAMClient } from '@aws-sdk/client-iam';
import type { OwnedListing } from '../../src/engines.js';
import type { AwsRole } from './schema.js';

/** The handle key that names a lease's IAM user (AwsTarget.plan). */
export const USER_NAME_KEY = 'user_name';
/** Where iam_user roles put their users unless they say otherwise (schema's user_path default). */
const DEFAULT_USER_PATH = '/credbroker/';
/** `cb-<role>-<12 base36>`, as plan names them. */
const OWNED_USER = /^cb-[a-z][a-z0-9_-]{0,31}-[0-9a-z]{12}$/;

/**
 * IAM users the broker's naming says it made: under each iam_user role's path (and the default
 * one, where the users of a role since removed may be), named as plan names them. IAM records
 * each user's CreateDate, so the sweep's grace counts from it.
 */
export async function listOwnedUsers(iam: IAMClient, roles: AwsRole[]): Promise<OwnedListing> {
  const paths = new Set([DEFAULT_USER_PATH]);
  for (const role of roles) if (role.credential_type === 'iam_user') paths.add(role.user_path);
  const seen = new Map<string, { name: string; createdAt?: Date }>();
  for (const path of paths) {
    let marker: string | undefined;
    do {
      const page = await iam.send(new ListUsersCommand({ PathPrefix: path, Marker: marker }));
      for (const user of page.Users ?? [])
        if (user.UserName && OWNED_USER.test(user.UserName))
          seen.set(user.UserName, { name: user.UserName, createdAt: user.CreateDate });
      marker = page.IsTruncated ? page.Marker : undefined;
    } while (marker);
  }
  return {
    handleKey: USER_NAME_KEY,
    objects: [...seen.values()].map((u) => ({
      name: u.name,
      handle: { kind: 'iam_user', [USER_NAME_KEY]: u.name, lease_id: '' },
      ...(u.createdAt ? { createdAt: u.createdAt } : {}),
    })),
  };
}
