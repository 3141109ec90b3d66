/**
 * The inline deny policy that makes STS sessions revocable. STS sessions cannot be deleted, so a
 * revoked session is denied everything by a statement on its role matching the session tag the
 * broker gave it. Statements are bucketed by the hour their sessions expire in, so a bucket can be
 * dropped whole once every session in it has expired on its own: the policy stays small.
 */
export const LEASE_TAG = 'credbroker-lease';
/** IAM's limit for a role's inline policies, counted without whitespace. */
export const INLINE_POLICY_LIMIT = 10_240;

const HOUR = 3600_000;
const SID_PREFIX = 'CredbrokerRevokedUntil';

interface Statement {
  Sid: string;
  Effect: 'Deny';
  Action: '*';
  Resource: '*';
  Condition: { [operator: string]: { [key: string]: string | string[] } };
}

export interface DenyPolicy {
  Version: '2012-10-17';
  Statement: Statement[];
}

export interface Revocation {
  token: string;
  expiresAt: Date;
}

export function emptyPolicy(): DenyPolicy {
  return { Version: '2012-10-17', Statement: [] };
}

/** Reads a policy this module wrote; statements it did not write are kept as they are. */
export function parsePolicy(document: string | undefined): DenyPolicy {
  if (!document) return emptyPolicy();
  const parsed = JSON.parse(document) as DenyPolicy;
  return { Version: '2012-10-17', Statement: Array.isArray(parsed.Statement) ? parsed.Statement : [parsed.Statement] };
}

const ISSUED_BEFORE_PREFIX = 'CredbrokerIssuedBeforeUntil';

/** When a statement this module wrote stops mattering (every session it denies has expired). */
const bucketEnd = (statement: Statement): number | null => {
  const m = new RegExp(`^(?:${SID_PREFIX}|${ISSUED_BEFORE_PREFIX})(\\d+)$`).exec(statement.Sid ?? '');
  return m ? Number(m[1]) * 1000 : null;
};

const tokensOf = (s: Statement): string[] => {
  const v = s.Condition.StringEquals?.[`aws:PrincipalTag/${LEASE_TAG}`];
  return Array.isArray(v) ? v : [];
};

export function isDenied(policy: DenyPolicy, token: string): boolean {
  return policy.Statement.some((s) => bucketEnd(s) !== null && tokensOf(s).includes(token));
}

/**
 * AWS's own incident pattern: deny every session of the role issued before `before`, whoever
 * started it. Kept until the longest session such a role can have has run out.
 */
export function withIssuedBefore(policy: DenyPolicy, before: Date, maxSessionSeconds: number, now: Date): DenyPolicy {
  const pruned = withRevocations(policy, [], now).Statement.filter(
    (s) => !s.Sid.startsWith(ISSUED_BEFORE_PREFIX) || issuedBeforeOf(s) > before.getTime(),
  );
  if (pruned.some((s) => s.Sid.startsWith(ISSUED_BEFORE_PREFIX))) return { Version: '2012-10-17', Statement: pruned }; // a later cut-off already covers this one
  const until = Math.ceil((before.getTime() + maxSessionSeconds * 1000) / 1000);
  pruned.push({
    Sid: `${ISSUED_BEFORE_PREFIX}${until}`,
    Effect: 'Deny',
    Action: '*',
    Resource: '*',
    Condition: { DateLessThan: { 'aws:TokenIssueTime': before.toISOString() } },
  });
  return { Version: '2012-10-17', Statement: pruned };
}

const issuedBeforeOf = (s: Statement): number =>
  Date.parse(String(s.Condition.DateLessThan?.['aws:TokenIssueTime'] ?? 0));

export function deniesIssuedBefore(policy: DenyPolicy, at: Date): boolean {
  return policy.Statement.some((s) => s.Sid.startsWith(ISSUED_BEFORE_PREFIX) && issuedBeforeOf(s) >= at.getTime());
}

/**
 * Adds deny entries for the given sessions and drops every bucket whose sessions have all
 * expired. Returns the new policy, or throws when it would not fit IAM's size limit.
 */
export function withRevocations(policy: DenyPolicy, revocations: Revocation[], now: Date): DenyPolicy {
  const statements = policy.Statement.filter((s) => {
    const end = bucketEnd(s);
    return end === null || end > now.getTime();
  }).map((s) => structuredClone(s));
  for (const { token, expiresAt } of revocations) {
    if (expiresAt <= now) continue; // expired sessions need no deny
    const end = Math.ceil(expiresAt.getTime() / HOUR) * HOUR;
    const sid = `${SID_PREFIX}${end / 1000}`;
    let statement = statements.find((s) => s.Sid === sid);
    if (!statement) {
      statement = {
        Sid: sid,
        Effect: 'Deny',
        Action: '*',
        Resource: '*',
        Condition: { StringEquals: { [`aws:PrincipalTag/${LEASE_TAG}`]: [] } },
      };
      statements.push(statement);
    }
    const tokens = statement.Condition.StringEquals![`aws:PrincipalTag/${LEASE_TAG}`] as string[];
    if (!tokens.includes(token)) tokens.push(token);
  }
  const next: DenyPolicy = { Version: '2012-10-17', Statement: statements };
  const size = JSON.stringify(next).length;
  if (size > INLINE_POLICY_LIMIT) {
    throw new Error(
      `the deny policy would be ${size} characters, over IAM's ${INLINE_POLICY_LIMIT}: too many sessions of this role are revoked before expiry at once; ` +
        "revoke the role's older sessions in AWS (a deny on aws:TokenIssueTime) and force-revoke these leases",
    );
  }
  return next;
}
