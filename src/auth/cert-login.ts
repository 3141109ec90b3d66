import type { X509Certificate } from 'node:crypto';
import { CertificateRefused, InvalidRequest } from '../errors.js';
import { parseCertificateBundle, type CertAuthMountConfig, type CertRoleConfig } from './auth-config.js';
import { chainProblem, distinguishedName, leafProblem } from './certificate-chain.js';
import { certificateNames, certificateParser, type CertificateNames } from './certificate-names.js';
import { globMatches } from './claims.js';
import type { Identity } from './identity.js';
import type { PeerCertificates } from './peer-certificates.js';
import { uriGlobMatches } from './uri-glob.js';

/** Vault's texts, which clients match on; the reason follows them. */
const UNTRUSTED = 'invalid certificate or no client certificate supplied';
const CONSTRAINTS_UNMET = 'no chain matching all constraints could be found for this login certificate';
/** A metadata value is copied into every lease and audit record: a certificate with a thousand SANs is cut short. */
const MAX_METADATA_CHARS = 1024;

export interface VerifiedCertLogin {
  identity: Omit<Identity, 'accessor'>;
  role: string;
  /** Vault's token display_name is `cert-<this>`: the role's display_name, else its name. */
  displayName: string;
  roleConfig: CertRoleConfig;
}

interface Role {
  name: string;
  config: CertRoleConfig;
  /** CA certificates: the client's chain must end at one. */
  authorities: X509Certificate[];
  /** Non-CA certificates: the client's certificate must be one of them, byte for byte. */
  pinned: X509Certificate[];
}

/** Why one role refused: not trusted, or trusted but a constraint is unmet. */
type Refusal = { untrusted: string } | { unmet: string };

/**
 * One `cert` auth mount (Vault's cert auth method): checks the client certificate of a TLS
 * connection against a role and builds the identity. `now` is injectable for tests.
 */
export class CertAuthMount {
  private readonly roles: Role[];

  constructor(
    readonly name: string,
    config: CertAuthMountConfig,
    private readonly now: () => Date = () => new Date(),
  ) {
    certificateParser(); // at start, not on the first login
    this.roles = Object.entries(config.roles).map(([roleName, role]) => {
      const certs = parseCertificateBundle(role.certificate);
      return {
        name: roleName,
        config: role,
        authorities: certs.filter((c) => c.ca),
        pinned: certs.filter((c) => !c.ca),
      };
    });
  }

  /**
   * The role `roleName` names, or without one (as in Vault) the first role in config order that
   * accepts the certificate. Throws InvalidRequest (400) when no certificate came, and
   * CertificateRefused (403) with the reason when none of the roles tried accepts it.
   */
  verify(roleName: unknown, peer: PeerCertificates): VerifiedCertLogin {
    if (roleName !== undefined && roleName !== null && typeof roleName !== 'string')
      throw new InvalidRequest('"name" must be a string: the role of the cert mount to log in with');
    const candidates = roleName ? this.roles.filter((r) => r.name === roleName) : this.roles;
    if (roleName && candidates.length === 0)
      throw new InvalidRequest(`role "${roleName.slice(0, 64)}" could not be found`);
    if (!peer.tls)
      throw new InvalidRequest(
        'cert login needs a TLS client certificate: this request came over plain http (the broker needs listen.tls)',
      );
    const [leaf, ...sent] = peer.chain;
    if (!leaf) throw new InvalidRequest('cert login needs a TLS client certificate: none was presented');

    const described = {
      serial_number: leaf.serialNumber.toUpperCase(),
      subject: distinguishedName(leaf.subject),
      issuer: distinguishedName(leaf.issuer),
    };
    const now = this.now();
    const problem = leafProblem(leaf, now);
    if (problem) throw new CertificateRefused(`${UNTRUSTED}: ${problem}`, described);
    let names: CertificateNames;
    try {
      names = certificateNames(leaf);
    } catch {
      throw new CertificateRefused(`${UNTRUSTED}: its names and key identifiers cannot be read`, described);
    }
    if (candidates.length === 0) throw new CertificateRefused(`${UNTRUSTED}: the mount has no role`, described);

    const refusals: [string, Refusal][] = [];
    for (const role of candidates) {
      const refusal = this.refusalBy(role, leaf, sent, names, now);
      if (!refusal)
        return {
          identity: identityOf(this.name, role, leaf, names),
          role: role.name,
          displayName: role.config.display_name ?? role.name,
          roleConfig: role.config,
        };
      refusals.push([role.name, refusal]);
    }
    throw new CertificateRefused(explain(refusals), described);
  }

  /** Why `role` does not accept the certificate, or null when it does. */
  private refusalBy(
    role: Role,
    leaf: X509Certificate,
    sent: X509Certificate[],
    names: CertificateNames,
    now: Date,
  ): Refusal | null {
    const pinned = role.pinned.some((p) => p.raw.equals(leaf.raw));
    if (!pinned) {
      const untrusted =
        role.authorities.length > 0
          ? chainProblem(leaf, sent, role.authorities, now)
          : 'it is not the certificate the role pins';
      if (untrusted) return { untrusted };
    }
    const unmet = unmetConstraint(role.config, names);
    return unmet ? { unmet } : null;
  }
}

/** The first of the role's constraints the certificate does not meet, or null. */
function unmetConstraint(role: CertRoleConfig, names: CertificateNames): string | null {
  const checks: [string, string[] | undefined, string[], (pattern: string, value: string) => boolean][] = [
    ['common name', role.allowed_common_names, names.commonNames, globMatches],
    ['DNS SAN', role.allowed_dns_sans, names.dnsSans, globMatches],
    ['email SAN', role.allowed_email_sans, names.emailSans, globMatches],
    ['URI SAN', role.allowed_uri_sans, names.uriSans, uriGlobMatches],
  ];
  for (const [what, allowed, values, matches] of checks) {
    if (!allowed) continue;
    if (!values.some((v) => allowed.some((p) => matches(p, v)))) {
      const shown = values.length ? values.map((v) => JSON.stringify(cut(v, 100))).join(', ') : '(none)';
      return `no ${what} of the certificate is allowed by the role (it has: ${cut(shown, 300)})`;
    }
  }
  return null;
}

/** One message for every role tried: Vault's text for the kind of refusal, then each role's reason. */
function explain(refusals: [string, Refusal][]): string {
  const anyTrusted = refusals.some(([, r]) => 'unmet' in r);
  const reasons = refusals.map(([name, r]) => `role "${name}": ${'unmet' in r ? r.unmet : r.untrusted}`);
  return `${anyTrusted ? CONSTRAINTS_UNMET : UNTRUSTED}: ${reasons.join('; ')}`;
}

const cut = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

/**
 * The identity's name is the certificate's SPIFFE ID when it has exactly one (an X.509-SVID has
 * one URI SAN, and often no common name), else its common name, else its serial number.
 */
function identityOf(
  mount: string,
  role: Role,
  leaf: X509Certificate,
  names: CertificateNames,
): Omit<Identity, 'accessor'> {
  const spiffeIds = names.uriSans.filter((u) => u.toLowerCase().startsWith('spiffe://'));
  const spiffeId = spiffeIds.length === 1 ? spiffeIds[0]! : '';
  const commonName = names.commonNames.length === 1 ? names.commonNames[0]! : names.commonNames.join(',');
  const serialHex = leaf.serialNumber.toUpperCase();
  const metadata: Record<string, string> = {
    cert_name: role.name,
    common_name: commonName,
    // Decimal, as Vault's cert metadata writes it (`openssl x509 -serial` shows the hex).
    serial_number: BigInt(`0x${serialHex}`).toString(10),
    dns_sans: names.dnsSans.join(','),
    uri_sans: names.uriSans.join(','),
    spiffe_id: spiffeId,
    subject_key_id: names.subjectKeyId,
    authority_key_id: names.authorityKeyId,
  };
  for (const [key, value] of Object.entries(metadata)) metadata[key] = cut(value, MAX_METADATA_CHARS);
  return {
    name: cut(spiffeId || commonName || `serial:${serialHex}`, MAX_METADATA_CHARS),
    authMount: mount,
    metadata,
    policies: role.config.token_policies,
    root: false,
  };
}
