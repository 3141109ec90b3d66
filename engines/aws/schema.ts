import { z } from 'zod';
import type { EngineSecrets } from '../../src/engines.js';

const policyJson = z.string().refine((s) => {
  try {
    const doc = JSON.parse(s);
    return doc && typeof doc === 'object' && !Array.isArray(doc);
  } catch {
    return false;
  }
}, 'must be a JSON policy document');

const arn = z.string().regex(/^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}|aws)?:.+$/, 'must be an ARN');

export const awsMountSchema = z
  .object({
    region: z.string().min(1).default('us-east-1'),
    /** Static base credentials (as ${env:…} refs); without them, the SDK's default chain. */
    access_key_id: z.string().min(16).optional(),
    secret_access_key: z.string().min(16).optional(),
    session_token: z.string().min(1).optional(),
    /** An AWS-compatible endpoint for both STS and IAM (tests, VPC endpoints, LocalStack…). */
    endpoint: z.string().url().optional(),
    max_concurrent_calls: z.number().int().min(1).max(64).default(8),
    /** The inline policy on each role that holds deny statements for revoked sessions. */
    deny_policy_name: z
      .string()
      .regex(/^[\w+=,.@-]{1,128}$/)
      .default('credbroker-revoked-sessions'),
  })
  .strict()
  .refine((m) => Boolean(m.access_key_id) === Boolean(m.secret_access_key), {
    message: 'give both access_key_id and secret_access_key, or neither (the default credential chain)',
  });

export const awsRoleSchema = z.discriminatedUnion('credential_type', [
  z
    .object({
      credential_type: z.literal('assumed_role'),
      role_arns: z.array(arn).min(1),
      policy_document: policyJson.optional(),
      policy_arns: z.array(arn).optional(),
      external_id: z.string().min(2).max(1224).optional(),
      session_tags: z.record(z.string().min(1).max(128), z.string().max(256)).optional(),
      /** The roles' MaxSessionDuration in IAM (AWS refuses longer sessions); 3600 is AWS's default. */
      max_session_duration: z.number().int().min(900).max(43200).default(3600),
    })
    .strict(),
  z
    .object({
      credential_type: z.literal('federation_token'),
      policy_document: policyJson.optional(),
      policy_arns: z.array(arn).optional(),
    })
    .strict(),
  z.object({ credential_type: z.literal('session_token') }).strict(),
  z
    .object({
      credential_type: z.literal('iam_user'),
      user_path: z
        .string()
        .regex(/^\/([\x21-\x7e]+\/)*$/, 'must look like /path/')
        .default('/credbroker/'),
      permissions_boundary_arn: arn.optional(),
      policy_arns: z.array(arn).optional(),
      iam_groups: z.array(z.string().min(1).max(128)).optional(),
      policy_document: policyJson.optional(),
    })
    .strict(),
]);

export type AwsMount = z.infer<typeof awsMountSchema>;
export type AwsRole = z.infer<typeof awsRoleSchema>;

/** The mount's static base credentials, and each lease's secret key and session token. */
export const awsSecrets: EngineSecrets = {
  mount: { secret_access_key: 'value', session_token: 'value' },
  credential: ['secret_key', 'session_token'],
  // access_key_id: AWS's own spelling (AccessKeyId), as it appears in answers passed through.
  plain: ['access_key', 'access_key_id'],
};
