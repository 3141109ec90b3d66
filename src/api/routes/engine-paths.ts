/**
 * The route patterns that name an engine's request paths, kept here alone: which paths issue
 * leases is the engines' to say, and this is the one place the API spells them.
 */

/** `<mount>/<path>/<role>`: issues a lease (Vault's `creds`, or a path an engine adds). */
export const ISSUE_ROUTE = /^([^/]+)\/(creds|sts)\/([^/]+)$/;
