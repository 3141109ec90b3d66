import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { CertificateRefused, InvalidRequest, PermissionDenied, UnknownPath } from '../errors.js';
import type { BrokerMetrics } from '../metrics/broker-metrics.js';
import type { AuthMountConfig } from './auth-config.js';
import { CertAuthMount } from './cert-login.js';
import { ROOT_IDENTITY, type Identity } from './identity.js';
import { JwtAuthMount } from './jwt-login.js';
import type { PeerCertificates } from './peer-certificates.js';
import type { TokenRow, TokenStore } from './token-store.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** A login's body: `role` and `jwt` for a jwt or kubernetes mount, `name` (optional) for a cert mount. */
export interface LoginRequest {
  role?: unknown;
  jwt?: unknown;
  name?: unknown;
}

const NO_PEER: PeerCertificates = { tls: false, chain: [] };

export interface LoginResult {
  token: string;
  row: TokenRow;
  identity: Identity;
}

/** Who is asking (root token or broker token), and logins that mint broker tokens. */
export class AuthService {
  private readonly rootDigest: Buffer;
  private readonly mounts = new Map<string, JwtAuthMount | CertAuthMount>();

  constructor(
    rootToken: string,
    mounts: Record<string, AuthMountConfig>,
    readonly tokens: TokenStore,
    private readonly log: Logger,
    private readonly metrics?: BrokerMetrics,
  ) {
    this.rootDigest = digest(rootToken);
    for (const [name, config] of Object.entries(mounts))
      this.mounts.set(name, config.type === 'cert' ? new CertAuthMount(name, config) : new JwtAuthMount(name, config));
  }

  /** The identity behind a presented token; PermissionDenied for none, unknown, expired or revoked. */
  async authenticate(token: string | undefined): Promise<Identity> {
    if (!token) throw new PermissionDenied();
    if (timingSafeEqual(digest(token), this.rootDigest)) {
      this.log.warn('root token used');
      return ROOT_IDENTITY;
    }
    const row = await this.tokens.find(token);
    if (!row) throw new PermissionDenied();
    return identityOf(row);
  }

  /** `peer`: the certificates the connection's client presented, which a cert mount checks. */
  async login(mountName: string, body: LoginRequest, peer: PeerCertificates = NO_PEER): Promise<LoginResult> {
    try {
      const result = await this.loginOn(mountName, body, peer);
      this.metrics?.login(mountName);
      return result;
    } catch (err) {
      this.metrics?.login(mountName, err);
      throw err;
    }
  }

  private async loginOn(mountName: string, body: LoginRequest, peer: PeerCertificates): Promise<LoginResult> {
    const mount = this.mounts.get(mountName);
    if (!mount) throw new UnknownPath(`auth/${mountName}/login`);
    const verified =
      mount instanceof CertAuthMount ? this.verifyCert(mount, body, peer) : await mount.verify(body.role, body.jwt);
    const { token, row } = await this.tokens.create({
      identity: { ...verified.identity },
      role: verified.role,
      ...('displayName' in verified ? { displayName: verified.displayName } : {}),
      ttlSeconds: verified.roleConfig.token_ttl,
      maxTtlSeconds: verified.roleConfig.token_max_ttl,
      revokeLeases: verified.roleConfig.revoke_leases_with_token,
    });
    this.log.info(
      { auth_mount: mountName, role: verified.role, name: verified.identity.name, accessor: row.accessor },
      'login',
    );
    return { token, row, identity: identityOf(row) };
  }

  private verifyCert(mount: CertAuthMount, body: LoginRequest, peer: PeerCertificates) {
    try {
      return mount.verify(body.name, peer);
    } catch (err) {
      if (err instanceof CertificateRefused)
        this.log.warn(
          { auth_mount: mount.name, certificate: err.certificate, reason: err.message },
          'cert login refused',
        );
      throw err;
    }
  }

  async renewSelf(identity: Identity, incrementSeconds: number | undefined): Promise<TokenRow> {
    if (identity.root || !identity.accessor)
      throw new InvalidRequest('the root token does not expire and cannot be renewed');
    const row = await this.tokens.renew(identity.accessor, incrementSeconds || undefined);
    if (!row) throw new PermissionDenied();
    return row;
  }
}

export function identityOf(row: TokenRow): Identity {
  return {
    name: row.identity.name,
    authMount: row.identity.auth_mount,
    metadata: row.identity.metadata ?? {},
    policies: row.policies,
    accessor: row.accessor,
    root: false,
  };
}
