// test-only: never shipped
/**
 * Who signed the request (authentication, SigV4 + key/session lookup) and whether they may call the
 * action (the few authorization rules this endpoint models).
 *
 * Rejections, as AWS answers them:
 *  - no Authorization header: 403 MissingAuthenticationToken; malformed one: 400 IncompleteSignature;
 *  - scope not `<date>/<this region>/<sts|iam>/aws4_request`, or date ≠ x-amz-date's day: 403 SignatureDoesNotMatch;
 *  - x-amz-date more than 15 min from the endpoint's clock: 403 SignatureDoesNotMatch "Signature expired: …"
 *    (what STS and IAM answer; other services say RequestExpired). The SDK counts both as clock-skew errors;
 *  - unknown / deleted access key, ASIA key without the matching x-amz-security-token, AKIA key with a token,
 *    or a session whose IAM user was deleted: 403 InvalidClientTokenId;
 *  - expired session: 403 ExpiredToken;
 *  - wrong signature: 403 SignatureDoesNotMatch.
 * Presigned (query-string) signatures are not supported: they count as a missing Authorization header.
 */
import { AwsError, accessDenied, incompleteSignature, invalidClientTokenId, signatureDoesNotMatch } from './errors.js';
import { findDeny, type ConditionContext } from './policy.js';
import {
  expectedSignature,
  formatAmzDate,
  parseAmzDate,
  signaturesEqual,
  sha256Hex,
  type AuthorizationHeader,
  type SignableRequest,
} from './sigv4.js';
import type { AccessKey, AwsState, IamUser, Session } from './state.js';
import type { Service } from './xml.js';

export type Principal = { kind: 'user'; user: IamUser; key: AccessKey } | { kind: 'session'; session: Session };

const FIFTEEN_MINUTES = 15 * 60 * 1000;

export function principalArn(p: Principal): string {
  return p.kind === 'user' ? p.user.arn : p.session.arn;
}

export function principalUserId(p: Principal): string {
  return p.kind === 'user' ? p.user.userId : p.session.userId;
}

/** The IAM user behind long-term keys, or behind a GetSessionToken / GetFederationToken session. */
export function principalUser(p: Principal, state: AwsState): IamUser | undefined {
  if (p.kind === 'user') return p.user;
  return p.session.kind !== 'assumed-role' && p.session.userName ? state.users.get(p.session.userName) : undefined;
}

export function authenticate(
  req: SignableRequest & { body: Buffer },
  auth: AuthorizationHeader,
  state: AwsState,
  region: string,
): Principal {
  const header = (name: string) => req.headers.get(name)?.join(',');
  const amzDateText = header('x-amz-date');
  if (!amzDateText)
    throw incompleteSignature("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  const amzDate = parseAmzDate(amzDateText);
  if (!amzDate) throw incompleteSignature(`Date must be in ISO-8601 'basic format'. Got '${amzDateText}'.`);
  if (!auth.signedHeaders.includes('host'))
    throw incompleteSignature("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");

  if (auth.terminator !== 'aws4_request')
    throw signatureDoesNotMatch(
      `Credential should be scoped with a valid terminator: 'aws4_request', not '${auth.terminator}'.`,
    );
  if (auth.service !== 'sts' && auth.service !== 'iam')
    throw signatureDoesNotMatch(`Credential should be scoped to correct service: 'sts'. `);
  if (auth.region !== region)
    throw signatureDoesNotMatch(`Credential should be scoped to a valid region, not '${auth.region}'. `);
  if (auth.date !== amzDateText.slice(0, 8)) {
    throw signatureDoesNotMatch(
      `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${auth.date}' != '${amzDateText.slice(0, 8)}', from '${amzDateText}'.`,
    );
  }

  const now = state.now();
  if (amzDate.getTime() < now.getTime() - FIFTEEN_MINUTES) {
    const limit = formatAmzDate(new Date(now.getTime() - FIFTEEN_MINUTES));
    throw signatureDoesNotMatch(
      `Signature expired: ${amzDateText} is now earlier than ${limit} (${formatAmzDate(now)} - 15 min.)`,
    );
  }
  if (amzDate.getTime() > now.getTime() + FIFTEEN_MINUTES) {
    const limit = formatAmzDate(new Date(now.getTime() + FIFTEEN_MINUTES));
    throw signatureDoesNotMatch(
      `Signature not yet current: ${amzDateText} is still later than ${limit} (${formatAmzDate(now)} + 15 min.)`,
    );
  }

  const token = header('x-amz-security-token');
  let principal: Principal;
  let secret: string;
  const key = state.accessKeys.get(auth.accessKeyId);
  const session = state.sessions.get(auth.accessKeyId);
  if (key) {
    const user = state.users.get(key.userName);
    if (!user || key.status !== 'Active' || token !== undefined) throw invalidClientTokenId();
    principal = { kind: 'user', user, key };
    secret = key.secretAccessKey;
  } else if (session) {
    if (token !== session.sessionToken) throw invalidClientTokenId();
    if (session.kind !== 'assumed-role' && !(session.userName && state.users.has(session.userName)))
      throw invalidClientTokenId();
    if (session.expiration.getTime() <= now.getTime())
      throw new AwsError(403, 'ExpiredToken', 'The security token included in the request is expired');
    principal = { kind: 'session', session };
    secret = session.secretAccessKey;
  } else {
    throw invalidClientTokenId();
  }

  const mismatch = () =>
    signatureDoesNotMatch(
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    );
  // The SDK signs x-amz-content-sha256 too; the canonical request uses it, so a body altered after signing
  // must be caught by comparing it with the body (outside S3 AWS hashes the body itself: same outcome).
  const declaredHash = header('x-amz-content-sha256');
  if (declaredHash !== undefined && declaredHash !== sha256Hex(req.body)) throw mismatch();
  if (!signaturesEqual(expectedSignature(req, auth, amzDateText, secret), auth.signature)) throw mismatch();
  return principal;
}

/** Condition context of an assumed-role session (see policy.ts for the keys supported). */
function sessionContext(session: Session): ConditionContext {
  const ctx: ConditionContext = new Map([['aws:tokenissuetime', session.issuedAt.toISOString()]]);
  if (session.sourceIdentity !== undefined) {
    ctx.set('aws:sourceidentity', session.sourceIdentity);
    ctx.set('sts:sourceidentity', session.sourceIdentity);
  }
  for (const tag of session.tags) ctx.set(`aws:principaltag/${tag.Key.toLowerCase()}`, tag.Value);
  return ctx;
}

/**
 * Everything is allowed except:
 *  - GetFederationToken sessions: no IAM at all, no STS but GetCallerIdentity (as AWS);
 *  - GetSessionToken sessions: no IAM (AWS allows it only with MFA), STS only AssumeRole / GetCallerIdentity;
 *  - assumed-role sessions: any action matched by a Deny statement of the role's inline policies.
 *    NOTE: real AWS never denies sts:GetCallerIdentity; this endpoint does, on purpose, so a test can
 *    probe "is this session revoked?" with the cheapest signed call.
 */
export function authorize(p: Principal, service: Service, action: string, state: AwsState): void {
  if (p.kind === 'user') return;
  const s = p.session;
  const deny = (why: string) =>
    accessDenied(`User: ${s.arn} is not authorized to perform: ${service}:${action} ${why}`);
  if (s.kind === 'federated-user' && (service === 'iam' || action !== 'GetCallerIdentity'))
    throw deny('with federated-user credentials');
  if (s.kind === 'session-token' && (service === 'iam' || !['AssumeRole', 'GetCallerIdentity'].includes(action))) {
    throw deny(service === 'iam' ? 'because no MFA-authenticated session exists' : 'with session-token credentials');
  }
  if (s.kind === 'assumed-role') {
    const role = s.roleName ? state.roles.get(s.roleName) : undefined;
    if (role && findDeny(role.inlinePolicies, `${service}:${action}`, sessionContext(s))) {
      throw deny(`on resource: ${role.arn} with an explicit deny in an identity-based policy`);
    }
  }
}
