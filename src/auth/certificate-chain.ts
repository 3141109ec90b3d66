import type { X509Certificate } from 'node:crypto';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';
/** Intermediates followed from the leaf to an anchor: more than any real PKI uses, and a bound on the work. */
const MAX_INTERMEDIATES = 8;

/** A certificate's distinguished name on one line, cut short: it is the client's text, shown in logs. */
export function distinguishedName(name: string): string {
  const line = name.replace(/\n/g, ', ');
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** Why `cert` is not valid at `now` (expired or not yet valid), or null. `what` names it in the reason. */
export function validityProblem(cert: X509Certificate, now: Date, what: string): string | null {
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (now.getTime() > notAfter.getTime()) return `${what} expired at ${notAfter.toISOString()}`;
  if (now.getTime() < notBefore.getTime()) return `${what} is not valid before ${notBefore.toISOString()}`;
  return null;
}

/** Why the client certificate cannot log in whatever the role (validity, key usage), or null. */
export function leafProblem(leaf: X509Certificate, now: Date): string | null {
  const validity = validityProblem(leaf, now, 'the certificate');
  if (validity) return validity;
  // node names the extended key usages `keyUsage`; absent (or empty) means the certificate is not restricted.
  const usages = leaf.keyUsage ?? [];
  if (usages.length > 0 && !usages.includes(CLIENT_AUTH) && !usages.includes(ANY_EXTENDED_KEY_USAGE))
    return 'the certificate is not for client authentication (its extended key usage lacks clientAuth)';
  return null;
}

/** `child` names `issuer` as its issuer (and its key ids and key usage allow it, as OpenSSL checks) and bears its signature. */
const issuedBy = (child: X509Certificate, issuer: X509Certificate) =>
  child.checkIssued(issuer) && child.verify(issuer.publicKey);

/**
 * Whether `leaf`, through the intermediates the client sent (`pool`, in any order), is signed by
 * one of the CA `anchors`; null when it is, else why not. Every link is checked with node's
 * crypto (issuer name and signature), every intermediate must be a CA and valid at `now`, and so
 * must the anchor reached. Path length and name constraints are not checked.
 */
export function chainProblem(
  leaf: X509Certificate,
  pool: X509Certificate[],
  anchors: X509Certificate[],
  now: Date,
): string | null {
  let current = leaf;
  const used = new Set<number>();
  for (let depth = 0; depth <= MAX_INTERMEDIATES; depth++) {
    const anchor = anchors.find((a) => issuedBy(current, a));
    if (anchor) return validityProblem(anchor, now, `the CA certificate ${distinguishedName(anchor.subject)}`);
    const next = pool.findIndex((c, i) => !used.has(i) && c.ca && issuedBy(current, c));
    if (next === -1) break;
    const intermediate = pool[next]!;
    const invalid = validityProblem(intermediate, now, `the intermediate ${distinguishedName(intermediate.subject)}`);
    if (invalid) return invalid;
    used.add(next);
    current = intermediate;
  }
  return `it is not signed by the role's CA (issuer: ${distinguishedName(leaf.issuer)})`;
}
