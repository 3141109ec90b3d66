// test-only: never shipped

/**
 * An error answered the AWS way: HTTP status plus the `<Error><Code>` / `<Message>` pair that the SDK
 * turns into an exception (its `name` is the modeled exception, e.g. `MalformedPolicyDocumentException`,
 * or the bare code for unmodeled ones such as `SignatureDoesNotMatch`).
 */
export class AwsError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly type: 'Sender' | 'Receiver' = status >= 500 ? 'Receiver' : 'Sender',
  ) {
    super(message);
  }
}

export const accessDenied = (message: string) => new AwsError(403, 'AccessDenied', message);
export const noSuchEntity = (message: string) => new AwsError(404, 'NoSuchEntity', message);
export const limitExceeded = (message: string) => new AwsError(409, 'LimitExceeded', message);
export const invalidClientTokenId = () =>
  new AwsError(403, 'InvalidClientTokenId', 'The security token included in the request is invalid.');
export const signatureDoesNotMatch = (message: string) => new AwsError(403, 'SignatureDoesNotMatch', message);
export const incompleteSignature = (message: string) => new AwsError(400, 'IncompleteSignature', message);
