import type { CredentialEnvelope, CredentialFormats } from '../../src/engines.js';

function requireAwsKeys(data: CredentialEnvelope['data']): {
  access_key: string;
  secret_key: string;
  session_token?: string;
} {
  if (typeof data.access_key !== 'string' || typeof data.secret_key !== 'string')
    throw new Error('this format needs an AWS credential (access_key, secret_key)');
  return {
    access_key: data.access_key,
    secret_key: data.secret_key,
    session_token: typeof data.session_token === 'string' ? data.session_token : undefined,
  };
}

/** As the AWS CLI and SDKs read a credential: environment, shared credentials file, credential_process. */
export const awsFormats: CredentialFormats = {
  env: { access_key: 'AWS_ACCESS_KEY_ID', secret_key: 'AWS_SECRET_ACCESS_KEY', session_token: 'AWS_SESSION_TOKEN' },
  files: {
    'aws-credentials'({ data }, opts) {
      const keys = requireAwsKeys(data);
      const lines = [
        `[${opts.profile ?? 'default'}]`,
        `aws_access_key_id = ${keys.access_key}`,
        `aws_secret_access_key = ${keys.secret_key}`,
      ];
      if (keys.session_token) lines.push(`aws_session_token = ${keys.session_token}`);
      return `${lines.join('\n')}\n`;
    },
    /** The JSON AWS's `credential_process` expects; the SDK calls the process again before Expiration. */
    'credential-process'(envelope, opts) {
      const { data } = envelope;
      const keys = requireAwsKeys(data);
      const expiration =
        typeof data.expiration === 'string'
          ? data.expiration
          : new Date((opts.now ?? new Date()).getTime() + envelope.lease_duration * 1000).toISOString();
      return `${JSON.stringify({ Version: 1, AccessKeyId: keys.access_key, SecretAccessKey: keys.secret_key, ...(keys.session_token ? { SessionToken: keys.session_token } : {}), Expiration: expiration })}\n`;
    },
  },
};
