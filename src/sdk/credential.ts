/**
 * A credential's fields as the engine answered them (PostgreSQL: username, password, host, port, database).
 *
 * @example
 * ```ts
 * const { username } = lease.data as CredentialData & { username: string };
 * ```
 */
export type CredentialData = Record<string, unknown>;
