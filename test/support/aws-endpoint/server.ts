// test-only: never shipped
/**
 * One HTTP listener for both services. The service comes from the SigV4 credential scope
 * (`…/<region>/sts/aws4_request` or `…/iam/…`); when the request carries no usable Authorization
 * header, from the Version field (2011-06-15 = STS, 2010-05-08 = IAM). Pipeline per request:
 * read body -> record -> throttle switch -> authenticate -> find action -> authorize -> handle -> XML.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { authenticate, authorize } from './auth.js';
import { AwsError, incompleteSignature } from './errors.js';
import { IAM_ACTIONS } from './iam-actions.js';
import { type Params, parseForm } from './params.js';
import { headerValues, parseAuthorization, sha256Hex, type AuthorizationHeader } from './sigv4.js';
import type { AwsState } from './state.js';
import { STS_ACTIONS, type Handler } from './sts-actions.js';
import { errorXml, type Service, successXml } from './xml.js';

export interface AwsCall {
  service: Service;
  action: string;
  /** The access key id named in the signature's Credential ('' when there was none). */
  accessKeyId: string;
  /** All form fields (body and query string), decoded, Action and Version included. */
  params: Params;
  status: number;
  /** The error code answered, when status is not 200. */
  code?: string;
}

export interface ServerOptions {
  state: AwsState;
  region: string;
  calls: AwsCall[];
  /** Remaining calls to answer with 400 Throttling. */
  throttle: { remaining: number };
  /** Which clock the Date response header shows; the SDK corrects its own clock from it. */
  dateHeader: 'server-clock' | 'real-clock';
}

const VERSIONS: Record<Service, string> = { sts: '2011-06-15', iam: '2010-05-08' };
const ACTIONS: Record<Service, Record<string, Handler>> = { sts: STS_ACTIONS, iam: IAM_ACTIONS };
const MAX_BODY = 1 << 20;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) reject(new AwsError(413, 'RequestEntityTooLarge', 'Request entity too large'));
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function createAwsServer(opts: ServerOptions): Server {
  const { state, region, calls, throttle } = opts;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const requestId = randomUUID();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const rawQuery = q < 0 ? '' : url.slice(q + 1);
    const headers = headerValues(req.rawHeaders);

    let body: Buffer = Buffer.alloc(0);
    let params: Params = parseForm(rawQuery);
    let auth: AuthorizationHeader | undefined;
    let authError: AwsError | undefined;
    let bodyError: AwsError | undefined;
    try {
      body = await readBody(req);
      params = { ...params, ...parseForm(body.toString('utf8')) };
    } catch (e) {
      bodyError = e instanceof AwsError ? e : new AwsError(400, 'MalformedHttpRequestException', String(e));
    }
    const authorization = headers.get('authorization')?.[0];
    if (authorization === undefined)
      authError = new AwsError(403, 'MissingAuthenticationToken', 'Request is missing Authentication Token');
    else {
      try {
        auth = parseAuthorization(authorization);
      } catch (e) {
        authError = e instanceof AwsError ? e : incompleteSignature(String(e));
      }
    }
    const service: Service =
      auth?.service === 'iam' || auth?.service === 'sts'
        ? auth.service
        : params.Version === VERSIONS.iam
          ? 'iam'
          : 'sts';
    const action = params.Action ?? '';
    const call: AwsCall = { service, action, accessKeyId: auth?.accessKeyId ?? '', params, status: 0 };
    calls.push(call);

    let status = 200;
    let xml: string;
    try {
      if (bodyError) throw bodyError;
      if (throttle.remaining > 0) {
        throttle.remaining--;
        throw new AwsError(400, 'Throttling', 'Rate exceeded');
      }
      if (authError || !auth) throw authError ?? incompleteSignature('Missing Authorization');
      const payloadHash = headers.get('x-amz-content-sha256')?.[0] ?? sha256Hex(body);
      const principal = authenticate(
        { method: req.method ?? 'GET', rawPath, rawQuery, headers, payloadHash, body },
        auth,
        state,
        region,
      );
      if (!action) throw new AwsError(400, 'MissingAction', 'Missing Action');
      const handler = params.Version === VERSIONS[service] ? ACTIONS[service][action] : undefined;
      if (!handler)
        throw new AwsError(
          400,
          'InvalidAction',
          `Could not find operation ${action} for version ${params.Version ?? 'NO_VERSION_SPECIFIED'}`,
        );
      authorize(principal, service, action, state);
      xml = successXml(service, action, requestId, handler(principal, params, state));
    } catch (e) {
      const err =
        e instanceof AwsError
          ? e
          : new AwsError(500, 'InternalFailure', `aws-endpoint bug: ${e instanceof Error ? e.stack : String(e)}`);
      status = err.status;
      call.code = err.code;
      xml = errorXml(service, err, requestId);
    }
    call.status = status;
    const date = opts.dateHeader === 'server-clock' ? state.now() : new Date();
    res.writeHead(status, {
      'Content-Type': 'text/xml',
      'Content-Length': Buffer.byteLength(xml),
      'x-amzn-RequestId': requestId,
      Date: date.toUTCString(),
    });
    res.end(xml);
  }

  return createServer((req, res) => {
    handle(req, res).catch((e) => {
      res.destroy(e instanceof Error ? e : new Error(String(e)));
    });
  });
}
