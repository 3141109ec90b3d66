/** Who is asking: the root token, or a broker token obtained by a login. */
export interface Identity {
  /** From the auth role's user_claim, e.g. `system:serviceaccount:etl:reader`; 'root' for the root token. */
  name: string;
  /** The auth mount that logged it in ('token' for the root token). */
  authMount: string;
  /** Claims copied by the auth role's claim_mappings, e.g. namespace, service account, pipeline run. */
  metadata: Record<string, string>;
  policies: string[];
  /** Names the token in the audit log and on leases, without being it; absent for root. */
  accessor?: string;
  root: boolean;
}

export const ROOT_IDENTITY: Identity = {
  name: 'root',
  authMount: 'token',
  metadata: {},
  policies: ['root'],
  root: true,
};

/** The part of an identity stored on each lease and in each audit record. */
export function identityRecord(identity: Identity) {
  return {
    name: identity.name,
    auth_mount: identity.authMount,
    metadata: identity.metadata,
    ...(identity.accessor ? { accessor: identity.accessor } : {}),
    root: identity.root,
  };
}
