// test-only: never shipped
/**
 * The account's mutable state, open for tests to inspect (and to poke, e.g. expireSession):
 * IAM users with their keys, policies and groups; the configured roles with their inline policies;
 * and every temporary session issued by STS. Maps are keyed by the exact name / access key id.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { Tag } from './params.js';

export const ACCOUNT_ID = '123456789012';

export interface IamUser {
  userName: string;
  userId: string;
  path: string;
  arn: string;
  createDate: Date;
  permissionsBoundary?: string;
  tags: Tag[];
  /** Managed policy ARNs (AttachUserPolicy). */
  attachedPolicies: string[];
  groups: string[];
  /** Inline policies (PutUserPolicy): name -> document as submitted. */
  inlinePolicies: Map<string, string>;
}

export interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
  userName: string;
  status: 'Active' | 'Inactive';
  createDate: Date;
}

export interface Role {
  arn: string;
  roleName: string;
  roleId: string;
  accountId: string;
  maxSessionDuration: number;
  /** Inline policies (PutRolePolicy): name -> document as submitted. */
  inlinePolicies: Map<string, string>;
}

export interface Group {
  groupName: string;
  groupId: string;
  path: string;
  arn: string;
  createDate: Date;
}

/** assumed-role: AssumeRole; federated-user: GetFederationToken; session-token: GetSessionToken. */
export type SessionKind = 'assumed-role' | 'federated-user' | 'session-token';

export interface Session {
  kind: SessionKind;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  issuedAt: Date;
  expiration: Date;
  /** Principal as GetCallerIdentity reports it. */
  arn: string;
  userId: string;
  /** The IAM user whose keys obtained the session (federated-user, session-token; AssumeRole by a user). */
  userName?: string;
  roleArn?: string;
  roleName?: string;
  /** RoleSessionName or the federated Name. */
  sessionName?: string;
  tags: Tag[];
  sourceIdentity?: string;
  externalId?: string;
  policy?: string;
  policyArns: string[];
  /** Obtained with temporary credentials of another assumed-role session (role chaining). */
  chained: boolean;
}

const UPPER_ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const randomId = (prefix: string, length: number) =>
  prefix + Array.from({ length }, () => UPPER_ALNUM[randomInt(UPPER_ALNUM.length)]).join('');
export const randomSecret = () => randomBytes(30).toString('base64');

export class AwsState {
  readonly accountId = ACCOUNT_ID;
  readonly users = new Map<string, IamUser>();
  readonly accessKeys = new Map<string, AccessKey>();
  readonly roles = new Map<string, Role>();
  readonly groups = new Map<string, Group>();
  readonly sessions = new Map<string, Session>();
  /** Seconds added to the real clock to get this endpoint's clock. */
  clockSkewSeconds = 0;

  /** The endpoint's clock (real time + clockSkewSeconds). */
  now(): Date {
    return new Date(Date.now() + this.clockSkewSeconds * 1000);
  }

  /** IAM names are unique regardless of case. */
  userNameTaken(name: string): boolean {
    const lower = name.toLowerCase();
    return [...this.users.keys()].some((n) => n.toLowerCase() === lower);
  }

  createUser(userName: string, opts: { path?: string; permissionsBoundary?: string; tags?: Tag[] } = {}): IamUser {
    const path = opts.path ?? '/';
    const user: IamUser = {
      userName,
      userId: randomId('AIDA', 17),
      path,
      arn: `arn:aws:iam::${this.accountId}:user${path}${userName}`,
      createDate: this.now(),
      permissionsBoundary: opts.permissionsBoundary,
      tags: opts.tags ?? [],
      attachedPolicies: [],
      groups: [],
      inlinePolicies: new Map(),
    };
    this.users.set(userName, user);
    return user;
  }

  createAccessKey(userName: string): AccessKey {
    const key: AccessKey = {
      accessKeyId: randomId('AKIA', 16),
      secretAccessKey: randomSecret(),
      userName,
      status: 'Active',
      createDate: this.now(),
    };
    this.accessKeys.set(key.accessKeyId, key);
    return key;
  }

  keysOf(userName: string): AccessKey[] {
    return [...this.accessKeys.values()].filter((k) => k.userName === userName);
  }

  /** Registers a role from its ARN `arn:aws:iam::<account>:role/<path/><name>`. */
  addRole(arn: string, maxSessionDuration = 3600): Role {
    const m = /^arn:aws:iam::(\d{12}):role\/(?:[\x21-\x7e]*\/)?([\w+=,.@-]{1,64})$/.exec(arn);
    if (!m) throw new Error(`aws-endpoint: not a role ARN: ${arn}`);
    if (maxSessionDuration < 3600 || maxSessionDuration > 43200)
      throw new Error('aws-endpoint: maxSessionDuration must be 3600..43200');
    const role: Role = {
      arn,
      roleName: m[2]!,
      roleId: randomId('AROA', 17),
      accountId: m[1]!,
      maxSessionDuration,
      inlinePolicies: new Map(),
    };
    this.roles.set(role.roleName, role);
    return role;
  }

  roleByArn(arn: string): Role | undefined {
    return [...this.roles.values()].find((r) => r.arn === arn);
  }

  /** Groups exist implicitly: the first mention creates one. */
  group(groupName: string): Group {
    let group = this.groups.get(groupName);
    if (!group) {
      group = {
        groupName,
        groupId: randomId('AGPA', 17),
        path: '/',
        arn: `arn:aws:iam::${this.accountId}:group/${groupName}`,
        createDate: this.now(),
      };
      this.groups.set(groupName, group);
    }
    return group;
  }

  /** Mints temporary credentials (ASIA…) valid for durationSeconds from now. */
  issueSession(
    fields: Omit<Session, 'accessKeyId' | 'secretAccessKey' | 'sessionToken' | 'issuedAt' | 'expiration'>,
    durationSeconds: number,
  ): Session {
    const issuedAt = this.now();
    // AWS reports Expiration to the second; keep the stored value identical to what the client sees.
    const expiration = new Date(Math.floor((issuedAt.getTime() + durationSeconds * 1000) / 1000) * 1000);
    const session: Session = {
      ...fields,
      accessKeyId: randomId('ASIA', 16),
      secretAccessKey: randomSecret(),
      sessionToken: randomBytes(160).toString('base64'),
      issuedAt,
      expiration,
    };
    this.sessions.set(session.accessKeyId, session);
    return session;
  }

  /** Test helper: make a session's credentials expired as of now. */
  expireSession(accessKeyId: string): void {
    const session = this.sessions.get(accessKeyId);
    if (!session) throw new Error(`aws-endpoint: no session ${accessKeyId}`);
    session.expiration = new Date(this.now().getTime() - 1000);
  }
}
