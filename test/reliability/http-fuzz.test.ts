import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type Broker } from '../../src/broker.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { ROOT_TOKEN, api, baseTestConfig } from '../support/broker.js';
import {
  K8S_ISSUER,
  b64url,
  kubernetesAuthMount,
  kubernetesClaims,
  kubernetesRole,
  startJwksServer,
  type JwksServer,
} from '../support/jwks-server.js';
import { adminQuery, dropRolesWithPrefix, freshStoreDatabase, freshTargetDatabase, pgUrl } from '../support/pg.js';
import { RawConnection, type RawResponse } from '../support/raw-http.js';
import { recordFigures } from '../support/reliability.js';

/**
 * HTTP fuzzing of every route (issue 10): requests built by fast-check from the real route shapes,
 * mutated, with hostile headers and bodies, sent over kept-alive raw connections to one real
 * broker. The oracle: no answer is a 5xx, no connection ends without an answer, the broker still
 * answers its health check, and no refused request leaves a trace in the store (every lease and
 * token row added or changed is explained by a 2xx answer, or, for a revoked lease row, by an
 * issue answered 409 because a concurrent revoke overtook it).
 *
 * Seeded: `FUZZ_SEED=<n>` replays a run's request list; `RELIABILITY_LONG=1` sends 100,000.
 */

/** Roles are cluster-wide: every role this file creates starts with this. */
const PREFIX = 'hfuzz';
const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const LONG = process.env.RELIABILITY_LONG === '1';
const TOTAL = LONG ? 100_000 : 10_000;
const CONNECTIONS = 8;
/** Requests are generated in batches (seed + batch index), so a long run never holds all of them. */
const BATCH = 1_000;
/** Well above the broker's 64 KiB body limit: must be a 413, not a crash or a 500. */
const HUGE_BODY = 1024 * 1024;

let broker: Broker;
let storeDb: string;
let cluster: JwksServer;
/** Logged-in tokens of the unprivileged `fuzz` policy, with their accessors. */
const userTokens: Array<{ token: string; accessor: string }> = [];
/** Lease ids that exist, for the generator to use as they are and to mutate. */
const knownLeases: string[] = [];
/** Signed and hand-made JWTs: valid, expired, for another audience, unsigned... */
const jwts: string[] = [];

beforeAll(async () => {
  cluster = await startJwksServer({ algs: ['RS256'], issuer: K8S_ISSUER });
  const target = await freshTargetDatabase(PREFIX);
  storeDb = await freshStoreDatabase('hfuzz');
  const config = configSchema.parse({
    ...baseTestConfig(storeDb),
    mounts: {
      db: {
        type: 'postgres',
        connection_url: pgUrl(target.database),
        username_prefix: PREFIX,
        roles: {
          reader: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
          writer: { member_of: [target.group], default_ttl: '10m', max_ttl: '1h' },
        },
      },
    },
    auth: { kubernetes: kubernetesAuthMount(cluster, { etl: kubernetesRole('etl', ['fuzz']) }) },
    policies: {
      fuzz: [
        { path: 'db/creds/reader', capabilities: ['read', 'update'] },
        { path: 'db/creds/writer', capabilities: ['deny'] },
        { path: 'sys/leases/lookup/db/*', capabilities: ['list'] },
      ],
    },
  });
  broker = await startBroker(config, { log: createLogger('silent'), reaper: false });

  for (let i = 0; i < 3; i++) {
    const res = await api(
      broker,
      'PUT',
      'auth/kubernetes/login',
      { role: 'etl', jwt: await cluster.sign(kubernetesClaims()) },
      null,
    );
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    userTokens.push({ token: res.body.auth.client_token, accessor: res.body.auth.accessor });
  }
  for (const token of [ROOT_TOKEN, userTokens[0]!.token]) {
    const res = await api(broker, 'PUT', 'db/creds/reader', {}, token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    knownLeases.push(res.body.lease_id);
  }
  const now = Math.floor(Date.now() / 1000);
  jwts.push(
    await cluster.sign(kubernetesClaims()),
    await cluster.sign(kubernetesClaims({ namespace: 'other' })),
    await cluster.sign(kubernetesClaims({ audience: ['someone-else'] })),
    await cluster.sign({ ...kubernetesClaims(), exp: now - 60 }),
    await cluster.sign({ ...kubernetesClaims(), nbf: now + 3600 }),
    await cluster.sign(kubernetesClaims({ issuer: 'https://evil.example' })),
    await cluster.sign(kubernetesClaims(), { kid: await cluster.addKey({ published: false }) }),
    `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(kubernetesClaims())}.`,
    `${b64url({ alg: 'HS256', typ: 'JWT', kid: cluster.kids()[0] })}.${b64url(kubernetesClaims())}.c2lnbmF0dXJl`,
  );
});

afterAll(async () => {
  await broker?.close();
  await cluster?.close();
  await dropRolesWithPrefix(PREFIX);
});

// ---------------------------------------------------------------------------------------------
// The generator.

interface FuzzRequest {
  method: string;
  /** The request target exactly as written on the wire. */
  target: string;
  headers: Array<[string, string]>;
  /** The body as written, or the size of a huge body made only when sent. */
  body?: string | { hugeBytes: number };
  chunked?: boolean;
  gzip?: boolean;
}

/** Percent-encodes, byte by byte of its UTF-8 (a lone surrogate included), every character not in `keep`. */
function pctEncode(text: string, keep = /[A-Za-z0-9._~%:@!$&'()*+,;=-]/): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += byte < 0x80 && keep.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const weighted = <T>(...items: Array<[number, fc.Arbitrary<T>]>) =>
  fc.oneof(...items.map(([weight, arbitrary]) => ({ weight, arbitrary })));

/** Any text, ASCII or not, including control characters and lone surrogates. */
const anyText = (maxLength = 40) =>
  fc.oneof(
    fc.string({ maxLength }),
    fc.string({ unit: 'binary', maxLength }),
    fc.string({ unit: 'grapheme', maxLength }),
  );

/** A lease id: a real one, one a character off, another shape, or anything. */
function leaseIdArb(): fc.Arbitrary<string> {
  const known = fc.constantFrom(...knownLeases);
  const mutated = fc
    .tuple(known, fc.nat(), fc.constantFrom('flip', 'cut', 'grow', 'upper', 'mount', 'slash', 'dots'))
    .map(([id, n, how]) => {
      const at = n % id.length;
      switch (how) {
        case 'flip':
          return id.slice(0, at) + (id[at] === 'a' ? 'b' : 'a') + id.slice(at + 1);
        case 'cut':
          return id.slice(0, at);
        case 'grow':
          return id + 'x'.repeat(n % 400);
        case 'upper':
          return id.toUpperCase();
        case 'mount':
          return id.replace(/^db\//, 'nosuch/');
        case 'slash':
          return id.replace(/\//g, '//');
        default:
          return id.replace(/\/creds\//, '/../');
      }
    });
  return weighted(
    [3, known],
    [4, mutated],
    [2, fc.stringMatching(/^[a-z]{1,6}\/(creds|sts)\/[a-z]{1,6}\/[A-Za-z0-9]{1,70}$/)],
    [2, anyText(80)],
    [1, fc.integer({ min: 300, max: 20_000 }).map((n) => 'db/creds/reader/' + 'A'.repeat(n))],
  );
}

/** A ttl or increment as JSON text: every type, and numbers JSON.parse turns into Infinity or -0. */
const durationJson: fc.Arbitrary<string> = weighted(
  [2, fc.integer().map(String)],
  [1, fc.double().map((d) => (Number.isFinite(d) ? JSON.stringify(d) : '1e309'))],
  [
    2,
    fc.constantFrom(
      '1e309',
      '-1e309',
      '-0',
      '1e-400',
      '123456789012345678901234567890',
      '9007199254740993',
      '0',
      '-1',
      '4294967296',
      '0.5',
    ),
  ],
  [
    3,
    fc
      .oneof(
        fc.constantFrom(
          '5m',
          '1h',
          '-5m',
          '1e309',
          'NaN',
          'Infinity',
          '-Infinity',
          '0x10',
          '5m5m',
          '',
          ' ',
          '1h30m',
          '99999999999h',
          '1ns',
          '1.5s',
          '+5s',
          '5 m',
          '1d',
          '00000000000000000000000000000001s',
        ),
        anyText(20),
        fc.stringMatching(/^-?[0-9]{1,25}(\.[0-9]{1,5})?(ns|us|µs|ms|s|m|h|d)?$/),
      )
      .map((s) => JSON.stringify(s)),
  ],
  [1, fc.constantFrom('null', 'true', 'false', '[]', '{}', '[1]', '["5m"]', '{"seconds":5}')],
);

/** A JWT-ish value: signed tokens of every kind, mutated ones, hand-made three-part strings, other types. */
function jwtArb(): fc.Arbitrary<string> {
  const signed = fc.constantFrom(...jwts);
  const mutated = fc.tuple(signed, fc.nat(), fc.constantFrom('flip', 'cut', 'nosig', 'swap')).map(([jwt, n, how]) => {
    const parts = jwt.split('.');
    const at = n % jwt.length;
    if (how === 'flip') return jwt.slice(0, at) + (jwt[at] === 'A' ? 'B' : 'A') + jwt.slice(at + 1);
    if (how === 'cut') return jwt.slice(0, at);
    if (how === 'nosig') return `${parts[0]}.${parts[1]}.`;
    return `${parts[1]}.${parts[0]}.${parts[2]}`;
  });
  const handMade = fc
    .tuple(fc.jsonValue({ maxDepth: 2 }), fc.jsonValue({ maxDepth: 3 }), fc.string({ maxLength: 20 }))
    .map(
      ([header, payload, sig]) =>
        `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}.${Buffer.from(sig).toString('base64url')}`,
    );
  return weighted(
    [3, signed.map((s) => JSON.stringify(s))],
    [3, mutated.map((s) => JSON.stringify(s))],
    [2, handMade.map((s) => JSON.stringify(s))],
    [1, anyText(60).map((s) => JSON.stringify(s))],
    [1, fc.constantFrom('null', '1', '[]', '{}', '["a.b.c"]', '"a.b.c"', '"..."', `"${'x'.repeat(50_000)}"`)],
  );
}

/** A JSON value nested `depth` deep, as text: the edge refuses beyond its limit, never crashes. */
const nestedJson = fc
  .tuple(fc.integer({ min: 1, max: 200 }), fc.boolean())
  .map(([depth, arrays]) =>
    arrays ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
  );

/** A JSON object as text whose fields are those the routes read, with values of every type, plus others. */
function fieldsBody(): fc.Arbitrary<string> {
  const field = weighted<[string, string]>(
    [3, durationJson.map((v) => ['ttl', v])],
    [3, durationJson.map((v) => ['increment', v])],
    [4, leaseIdArb().map((v) => ['lease_id', JSON.stringify(v)])],
    [1, fc.constantFrom('1', 'null', '[]', '{}', 'true').map((v) => ['lease_id', v])],
    [3, jwtArb().map((v) => ['jwt', v])],
    [
      2,
      weighted(
        [3, fc.constant('"etl"')],
        [1, anyText(20).map((s) => JSON.stringify(s))],
        [1, fc.constantFrom('1', 'null', '["etl"]', '{}')],
      ).map((v) => ['role', v]),
    ],
    [
      1,
      fc
        .oneof(
          fc.date({ noInvalidDate: true }).map((d) => JSON.stringify(d.toISOString())),
          anyText(30).map((s) => JSON.stringify(s)),
          fc.constantFrom('1', 'null', '"2026-13-45T99:99:99Z"'),
        )
        .map((v) => ['issued_before', v]),
    ],
    [1, nestedJson.map((v) => ['ttl', v])],
    [
      1,
      fc
        .tuple(
          fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', ''),
          fc.jsonValue({ maxDepth: 2 }),
        )
        .map(([k, v]) => [k, JSON.stringify(v)]),
    ],
    [2, fc.tuple(anyText(15), fc.jsonValue({ maxDepth: 3 })).map(([k, v]) => [k, JSON.stringify(v)])],
  );
  return fc
    .array(field, { maxLength: 5 })
    .map((fields) => `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`);
}

function bodyArb(): fc.Arbitrary<string | { hugeBytes: number } | undefined> {
  return weighted<string | { hugeBytes: number } | undefined>(
    [6, fc.constant(undefined)],
    [12, fieldsBody()],
    [3, fc.jsonValue().map((v) => JSON.stringify(v))],
    [1, nestedJson],
    [1, fc.integer({ min: 1, max: 10_000 }).map((depth) => '['.repeat(depth) + ']'.repeat(depth))],
    // Malformed: truncated JSON, other syntaxes, a BOM, text.
    [2, fc.tuple(fieldsBody(), fc.nat()).map(([b, n]) => b.slice(0, n % b.length))],
    [
      2,
      fc.constantFrom(
        '',
        '{',
        '}',
        '{"ttl":',
        'null',
        '[]',
        '"text"',
        '1',
        'true',
        '\ufeff{}',
        '{"a":1,}',
        "{'a':1}",
        'ttl=5m',
        '{"\\u0000":1}',
        '{"ttl":"\\u0000"}',
        '{"a":"\\ud800"}',
        'NaN',
      ),
    ],
    [1, anyText(200)],
    [1, fc.constantFrom(60 * 1024, 64 * 1024 - 20, 64 * 1024 + 1, HUGE_BODY).map((hugeBytes) => ({ hugeBytes }))],
  );
}

/** The route shapes of src/api/routes.ts and auth-routes.ts, as path segments after /v1/. */
function routeSegments(): fc.Arbitrary<string[]> {
  const prefix = weighted(
    [3, fc.constantFrom('db', 'db/', 'db/creds', 'db/creds/reader', 'db/creds/reader/', 'nosuch', 'db/sts/x')],
    [2, leaseIdArb()],
    [1, anyText(30)],
  ).map((p) => p.split('/'));
  return weighted(
    [3, fc.constant(['sys', 'health'])],
    [1, fc.constantFrom(['sys', 'broker', 'live'], ['sys', 'broker', 'irrevocable'])],
    [3, fc.constant(['sys', 'leases', 'lookup'])],
    [2, prefix.map((p) => ['sys', 'leases', 'lookup', ...p])],
    [
      4,
      fc.option(leaseIdArb(), { nil: undefined }).map((id) => ['sys', 'leases', 'renew', ...(id ? id.split('/') : [])]),
    ],
    [
      4,
      fc
        .option(leaseIdArb(), { nil: undefined })
        .map((id) => ['sys', 'leases', 'revoke', ...(id ? id.split('/') : [])]),
    ],
    [
      2,
      fc.tuple(fc.constantFrom('revoke-prefix', 'revoke-force'), prefix).map(([op, p]) => ['sys', 'leases', op, ...p]),
    ],
    [1, prefix.map((p) => ['sys', 'broker', 'irrevocable', ...p])],
    [1, prefix.map((p) => ['sys', 'broker', 'revoke-issued-before', ...p])],
    [
      8,
      fc
        .tuple(
          fc.constantFrom('db', 'db', 'nosuch', 'sys', 'auth', 'DB'),
          fc.constantFrom('creds', 'creds', 'sts', 'config'),
          fc.constantFrom('reader', 'reader', 'writer', 'nosuch', 'verify', 'READER'),
        )
        .map((s) => [...s]),
    ],
    [2, fc.constantFrom('db', 'nosuch', 'sys', 'auth').map((m) => [m, 'config', 'verify'])],
    [
      6,
      fc
        .constantFrom('kubernetes', 'kubernetes', 'kubernetes', 'jwt', 'token', 'nosuch', 'Kubernetes')
        .map((m) => ['auth', m, 'login']),
    ],
    [
      3,
      fc
        .constantFrom('lookup-self', 'renew-self', 'revoke-self', 'lookup', 'create')
        .map((op) => ['auth', 'token', op]),
    ],
  );
}

/** A path segment to splice in: route words, dot segments, percent-encodings, very long ones. */
const segmentArb: fc.Arbitrary<string> = weighted(
  [
    4,
    fc.constantFrom(
      'db',
      'creds',
      'reader',
      'sys',
      'leases',
      'lookup',
      'renew',
      'revoke',
      'health',
      'broker',
      'auth',
      'token',
      'login',
      'kubernetes',
      'v1',
      '',
    ),
  ],
  [
    3,
    fc.constantFrom(
      '..',
      '.',
      '%2e%2e',
      '%2E',
      '%2F',
      '%2f..%2f',
      '%00',
      '%',
      '%zz',
      '%E2%82%AC',
      '%C0%AE',
      '%ff',
      '~',
      ';',
      '%20',
      '+',
      '*',
      '@',
      ':',
      '%3F',
      '%23',
    ),
  ],
  [3, anyText(20).map((s) => pctEncode(s, /[A-Za-z0-9]/))],
  [1, fc.integer({ min: 200, max: 20_000 }).map((n) => 'a'.repeat(n))],
  // Raw bytes outside ASCII in the request target, for the HTTP parser to take or refuse.
  [1, fc.constantFrom('\u00e9', '\u00ff', '\u0080')],
);

function pathArb(): fc.Arbitrary<string> {
  const mutation = fc.tuple(
    fc.constantFrom('insert', 'replace', 'delete', 'none', 'none', 'none'),
    fc.nat(),
    segmentArb,
  );
  const segments = fc.tuple(routeSegments(), fc.array(mutation, { maxLength: 2 })).map(([segs, mutations]) => {
    const out = [...segs];
    for (const [how, n, seg] of mutations) {
      const at = n % (out.length + 1);
      if (how === 'insert') out.splice(at, 0, seg);
      else if (how === 'replace') out.splice(at, 1, seg);
      else if (how === 'delete') out.splice(at, 1);
    }
    return out;
  });
  // The id's characters as a client would send them; some percent-encoded wholesale.
  const encoded = fc
    .tuple(segments, fc.nat(9))
    .map(([segs, n]) =>
      segs
        .map((s) => (n === 0 ? pctEncode(s, /[A-Za-z0-9]/) : /^[\u0080-\u00ff]$/.test(s) ? s : pctEncode(s)))
        .join('/'),
    );
  const base = weighted(
    [20, fc.constant('/v1/')],
    [
      1,
      fc.constantFrom(
        '/v1',
        '/',
        '//v1/',
        '/v1//',
        '/V1/',
        '/v2/',
        'http://127.0.0.1/v1/',
        '/v1/./',
        '/v1/../v1/',
        '/%76%31/',
      ),
    ],
  );
  const queryPair = fc.tuple(
    fc.constantFrom('list', 'ttl', 'activecode', 'standbycode', 'sealedcode', 'lease_id', 'x', '__proto__', 'list[]'),
    weighted(
      [3, fc.constantFrom('true', '1', 'false', '5m', '200', '101', '999', '-1', '', '%zz', '1e309')],
      [1, anyText(10).map((s) => pctEncode(s, /[A-Za-z0-9]/))],
    ),
  );
  const query = weighted(
    [6, fc.constant('')],
    [
      3,
      fc
        .array(queryPair, { minLength: 1, maxLength: 3 })
        .map((pairs) => '?' + pairs.map(([k, v]) => `${k}=${v}`).join('&')),
    ],
    [1, fc.constantFrom('?', '?&&', '?list', '?=', '?list=true&list=false')],
  );
  return fc.tuple(base, encoded, query).map(([b, p, q]) => b + p + q);
}

function headersArb(): fc.Arbitrary<Array<[string, string]>> {
  const fuzzTokens = userTokens.map((t) => t.token);
  const tokenValue = weighted(
    [2, fc.constant(ROOT_TOKEN)],
    [8, fc.constantFrom(...fuzzTokens)],
    [
      2,
      fc
        .constantFrom(...fuzzTokens, ROOT_TOKEN)
        .chain((t) => fc.nat(t.length - 1).map((at) => t.slice(0, at) + (t[at] === 'a' ? 'b' : 'a') + t.slice(at + 1))),
    ],
    [2, fc.stringMatching(/^[!-~]{1,80}$/)],
    [1, fc.constantFrom('cbt.', 'cbt.x', 'root', 's.x', 'hvs.x', '""', 'null', '%00')],
    [1, fc.integer({ min: 1000, max: 20_000 }).map((n) => 'cbt.' + 'a'.repeat(n))],
  );
  const token = weighted<Array<[string, string]>>(
    [3, fc.constant([])],
    [8, tokenValue.map((t) => [['X-Vault-Token', t]])],
    [2, tokenValue.map((t) => [['Authorization', `Bearer ${t}`]])],
    [
      1,
      fc
        .tuple(fc.constantFrom('bearer ', 'Basic ', 'Bearer', '', 'Bearer  '), tokenValue)
        .map(([scheme, t]) => [['Authorization', scheme + t]]),
    ],
    [
      1,
      fc.tuple(tokenValue, tokenValue).map(([a, b]) => [
        ['X-Vault-Token', a],
        ['Authorization', `Bearer ${b}`],
      ]),
    ],
    [
      1,
      fc.tuple(tokenValue, tokenValue).map(([a, b]) => [
        ['X-Vault-Token', a],
        ['X-Vault-Token', b],
      ]),
    ],
  );
  const contentType = weighted<Array<[string, string]>>(
    [6, fc.constant([])],
    [6, fc.constant([['Content-Type', 'application/json']])],
    [
      3,
      fc
        .constantFrom(
          'text/plain',
          'application/json; charset=utf-8',
          'application/json; charset=latin1',
          'application/json; charset=utf-16',
          'application/json; charset=nosuch',
          'application/x-www-form-urlencoded',
          'multipart/form-data; boundary=x',
          'application/octet-stream',
          '*/*',
          ';;;',
          'application/json, text/plain',
        )
        .map((v) => [['Content-Type', v]]),
    ],
  );
  const extra = fc.array(
    weighted<[string, string]>(
      [
        2,
        fc.constantFrom<[string, string]>(
          ['Accept', '*/*'],
          ['Accept-Encoding', 'gzip'],
          ['X-Forwarded-For', '10.0.0.1'],
          ['Expect', '100-continue'],
          ['Connection', 'close'],
          ['X-Vault-Request', 'true'],
          ['X-Vault-Namespace', 'ns1/'],
          ['Content-Encoding', 'identity'],
          ['Content-Encoding', 'br'],
          ['Content-Encoding', 'deflate'],
          ['Content-Encoding', 'nosuch'],
          ['Expect', 'nothing'],
          ['Upgrade', 'websocket'],
        ),
      ],
      [
        1,
        fc
          .tuple(fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/), fc.stringMatching(/^[ -~]{0,60}$/))
          .map(([k, v]) => [`X-${k}`, v.trim()] as [string, string]),
      ],
    ),
    { maxLength: 2 },
  );
  return fc.tuple(token, contentType, extra).map(([a, b, c]) => [...a, ...b, ...c]);
}

/**
 * A request a client could mean: a real route with one of its verbs, a real token and the body
 * fields the route reads (their values still drawn from every type). These reach the routes' real
 * work (issue, renew, revoke, login) rather than stopping at a refusal at the edge.
 */
function plausibleArb(): fc.Arbitrary<FuzzRequest> {
  const token = weighted<Array<[string, string]>>(
    [2, fc.constant([['X-Vault-Token', ROOT_TOKEN]])],
    [6, fc.constantFrom(...userTokens.map((t) => t.token)).map((t) => [['X-Vault-Token', t]])],
    [1, fc.constantFrom(...userTokens.map((t) => t.token)).map((t) => [['Authorization', `Bearer ${t}`]])],
    [1, fc.constant([])],
  );
  const goodTtl = weighted([4, fc.constantFrom('"5m"', '60', '"1h"', '"30s"', 'null', '""')], [1, durationJson]);
  const obj = (fields: Array<[string, string | undefined]>) =>
    `{${fields
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}:${v}`)
      .join(',')}}`;
  const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined, freq: 3 });
  const leaseIdJson = leaseIdArb().map((id) => JSON.stringify(id));
  const loginJwt = weighted([3, fc.constant(JSON.stringify(jwts[0]))], [2, jwtArb()]);
  const shapes = weighted<{ method: string[]; path: string; body?: string }>(
    [
      6,
      fc
        .tuple(fc.constantFrom('reader', 'reader', 'writer', 'nosuch'), opt(goodTtl))
        .map(([role, ttl]) => ({ method: ['PUT', 'POST'], path: `db/creds/${role}`, body: obj([['ttl', ttl]]) })),
    ],
    [
      2,
      fc
        .tuple(fc.constantFrom('reader', 'writer'), opt(fc.constantFrom('5m', '60', '', '-1', 'x', '1e309')))
        .map(([role, ttl]) => ({ method: ['GET'], path: `db/creds/${role}${ttl === undefined ? '' : `?ttl=${ttl}`}` })),
    ],
    [
      4,
      fc.tuple(fc.constantFrom('etl', 'etl', 'nosuch'), loginJwt).map(([role, jwt]) => ({
        method: ['PUT', 'POST'],
        path: 'auth/kubernetes/login',
        body: obj([
          ['role', JSON.stringify(role)],
          ['jwt', jwt],
        ]),
      })),
    ],
    [
      3,
      fc.tuple(leaseIdJson, opt(goodTtl)).map(([id, inc]) => ({
        method: ['PUT'],
        path: 'sys/leases/renew',
        body: obj([
          ['lease_id', id],
          ['increment', inc],
        ]),
      })),
    ],
    [
      2,
      fc.tuple(leaseIdArb(), opt(goodTtl)).map(([id, inc]) => ({
        method: ['PUT'],
        path: `sys/leases/renew/${pctEncode(id, /[A-Za-z0-9/_-]/)}`,
        body: obj([['increment', inc]]),
      })),
    ],
    [2, leaseIdJson.map((id) => ({ method: ['PUT'], path: 'sys/leases/revoke', body: obj([['lease_id', id]]) }))],
    [3, leaseIdJson.map((id) => ({ method: ['PUT'], path: 'sys/leases/lookup', body: obj([['lease_id', id]]) }))],
    [
      2,
      fc
        .constantFrom('', 'db/', 'db/creds/', 'db/creds/reader/', 'nosuch/')
        .map((p) => ({ method: ['LIST', 'GET'], path: `sys/leases/lookup/${p}${'?list=true'}` })),
    ],
    [
      1,
      fc
        .constantFrom('db/creds/writer/', 'nosuch/', 'db/creds/reader/zzz', 'db/creds/reader/')
        .map((p) => ({ method: ['PUT'], path: `sys/leases/revoke-prefix/${p}` })),
    ],
    [
      1,
      fc
        .constantFrom('db/creds/writer/', 'nosuch/')
        .map((p) => ({ method: ['PUT'], path: `sys/leases/revoke-force/${p}` })),
    ],
    [
      1,
      fc.constantFrom('db/creds/writer/', 'nosuch/', 'db/').map((p) => ({
        method: ['PUT'],
        path: `sys/broker/revoke-issued-before/${p}`,
        body: '{"issued_before":"2000-01-01T00:00:00Z"}',
      })),
    ],
    [1, fc.constantFrom('', 'db/').map((p) => ({ method: ['GET'], path: `sys/broker/irrevocable/${p}` }))],
    [1, fc.constant({ method: ['GET'], path: 'db/config/verify' })],
    [2, fc.constant({ method: ['GET', 'HEAD'], path: 'sys/health' })],
    [2, fc.constant({ method: ['GET'], path: 'auth/token/lookup-self' })],
    [
      1,
      opt(goodTtl).map((inc) => ({ method: ['PUT'], path: 'auth/token/renew-self', body: obj([['increment', inc]]) })),
    ],
  );
  return fc.tuple(shapes, fc.nat(), token).map(([shape, n, headers]) => ({
    method: shape.method[n % shape.method.length]!,
    target: `/v1/${shape.path}`,
    headers: shape.body === undefined ? headers : [...headers, ['Content-Type', 'application/json']],
    body: shape.body,
  }));
}

function requestArb(): fc.Arbitrary<FuzzRequest> {
  return weighted([2, plausibleArb()], [3, chaosArb()]);
}

function chaosArb(): fc.Arbitrary<FuzzRequest> {
  const method = weighted(
    [6, fc.constantFrom('GET', 'PUT', 'POST', 'LIST')],
    [2, fc.constantFrom('DELETE', 'HEAD', 'PATCH', 'OPTIONS')],
    [1, fc.constantFrom('TRACE', 'PROPFIND', 'MKCOL', 'get', 'list', 'FOO', 'L1ST', 'LISTS', 'PUTT', 'M-SEARCH')],
  );
  return fc
    .record({
      method,
      target: pathArb(),
      headers: headersArb(),
      body: bodyArb(),
      chunked: fc.boolean(),
      gzip: weighted([12, fc.constant(false)], [1, fc.constant(true)]),
    })
    .map((r) => ({
      ...r,
      chunked: r.body !== undefined && typeof r.body === 'string' && r.chunked && r.body.length % 3 === 0,
    }));
}

// ---------------------------------------------------------------------------------------------
// Sending.

function bodyBytes(req: FuzzRequest): Buffer | undefined {
  if (req.body === undefined) return undefined;
  const text =
    typeof req.body === 'string' ? req.body : `{"ttl":"${'a'.repeat(Math.max(0, req.body.hugeBytes - 11))}"}`;
  return req.gzip ? gzipSync(text) : Buffer.from(text, 'utf8');
}

/** The request as bytes; framing always valid (Content-Length or chunked), whatever the rest. */
function wireBytes(req: FuzzRequest): Buffer {
  const body = bodyBytes(req);
  const headers = [...req.headers];
  if (req.gzip) headers.push(['Content-Encoding', 'gzip']);
  const lines = [`${req.method} ${req.target} HTTP/1.1`, 'Host: 127.0.0.1', ...headers.map(([k, v]) => `${k}: ${v}`)];
  let framed = Buffer.alloc(0);
  if (body && req.chunked) {
    lines.push('Transfer-Encoding: chunked');
    const half = Math.floor(body.length / 2);
    const chunks = [body.subarray(0, half), body.subarray(half)].filter((c) => c.length);
    framed = Buffer.concat([
      ...chunks.flatMap((c) => [Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')]),
      Buffer.from('0\r\n\r\n'),
    ]);
  } else if (body) {
    lines.push(`Content-Length: ${body.length}`);
    framed = body;
  }
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), framed]);
}

const describeRequest = (i: number, req: FuzzRequest) =>
  `#${i} ${req.method} ${req.target.slice(0, 300)} headers=${JSON.stringify(req.headers.map(([k, v]) => [k, v.slice(0, 100)]))} body=${typeof req.body === 'string' ? JSON.stringify(req.body.slice(0, 300)) : JSON.stringify(req.body)}${req.chunked ? ' chunked' : ''}${req.gzip ? ' gzip' : ''}`;

interface Answered {
  req: FuzzRequest;
  res: RawResponse;
}

/** The path after /v1/ as the broker routes it: no authority, no query, percent-decoded where it can be. */
function routedPath(target: string): string {
  const path = target.replace(/^https?:\/\/[^/]*/, '').split('?')[0]!;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

const presentedTokens = (req: FuzzRequest) =>
  req.headers.flatMap(([k, v]) =>
    k.toLowerCase() === 'x-vault-token'
      ? [v]
      : k.toLowerCase() === 'authorization' && v.startsWith('Bearer ')
        ? [v.slice(7)]
        : [],
  );

// ---------------------------------------------------------------------------------------------
// The store, before and after.

interface Snapshot {
  leases: Map<
    string,
    {
      state: string;
      expires_at: string;
      last_renewal: string | null;
      revoked_at: string | null;
      token_accessor: string | null;
      row: string;
    }
  >;
  tokens: Map<string, { row: string }>;
}

async function snapshot(): Promise<Snapshot> {
  const leases = await adminQuery(
    storeDb,
    `SELECT id, state, expires_at::text, last_renewal::text, revoked_at::text, token_accessor, credential_disabled_at::text, attempts, max_expires_at::text, renewable FROM credbroker_leases`,
  );
  const tokens = await adminQuery(
    storeDb,
    `SELECT accessor, expires_at::text, max_expires_at::text, revoked_at::text, policies FROM credbroker_tokens`,
  );
  return {
    leases: new Map(leases.map((r) => [r.id, { ...r, row: JSON.stringify(r) }])),
    tokens: new Map(tokens.map((r) => [r.accessor, { row: JSON.stringify(r) }])),
  };
}

/**
 * Every lease and token row that appeared or changed, checked against the 2xx answers: a new
 * lease is one a 2xx answer handed out, a new token one a 2xx login handed out, a changed lease
 * is named by a 2xx renew or revoke, lies under a 2xx prefix revoke, or belongs to a token a 2xx
 * revoke-self ended; a changed token is one that renewed or revoked itself with a 2xx.
 */
function unexplainedChanges(before: Snapshot, after: Snapshot, ok: Answered[], overtaken: number): string[] {
  const problems: string[] = [];
  // An issue a concurrent revoke overtook (409) keeps its row, revoked, as the record of the credential taken back.
  let overtakenRows = 0;
  const issued = new Set<string>();
  const loggedIn = new Set<string>();
  const namedLeases: string[] = [];
  const prefixes: string[] = [];
  const selfChanged = new Set<string>();
  const accessorOf = new Map(userTokens.map((t) => [t.token, t.accessor]));
  for (const { req, res } of ok) {
    if (typeof res.body?.lease_id === 'string' && res.body.lease_id) issued.add(res.body.lease_id);
    if (typeof res.body?.auth?.accessor === 'string' && res.body.auth.client_token)
      loggedIn.add(res.body.auth.accessor);
    const path = routedPath(req.target);
    const text = path + ' ' + (typeof req.body === 'string' ? req.body : '');
    if (/sys\/leases\/(renew|revoke)/.test(path)) namedLeases.push(text);
    const prefix = /sys\/(?:leases\/revoke-(?:prefix|force)|broker\/revoke-issued-before)\/(.*)$/.exec(path);
    if (prefix) prefixes.push(prefix[1]!);
    if (/auth\/token\/(renew|revoke)-self/.test(path))
      for (const t of presentedTokens(req)) if (accessorOf.has(t)) selfChanged.add(accessorOf.get(t)!);
  }
  const leaseExplained = (id: string, accessor: string | null) =>
    namedLeases.some((t) => t.includes(id)) ||
    prefixes.some((p) => id.startsWith(p)) ||
    (accessor !== null && selfChanged.has(accessor));

  for (const [id, row] of after.leases) {
    const old = before.leases.get(id);
    if (!old) {
      if (!issued.has(id) && (row.state === 'revoked' || row.state === 'revoking') && ++overtakenRows <= overtaken)
        continue;
      if (!issued.has(id)) problems.push(`lease ${id} (${row.state}) was added, but no 2xx answer handed it out`);
      else if (row.state !== 'active' && !leaseExplained(id, row.token_accessor))
        problems.push(`lease ${id} issued during the run is ${row.state}, and no 2xx request revoked it`);
    } else if (old.row !== row.row && !leaseExplained(id, row.token_accessor)) {
      problems.push(`lease ${id} changed with no 2xx request to explain it: ${old.row} -> ${row.row}`);
    }
  }
  for (const id of before.leases.keys())
    if (!after.leases.has(id)) problems.push(`lease ${id} disappeared from the store`);
  for (const [accessor, row] of after.tokens) {
    const old = before.tokens.get(accessor);
    if (!old) {
      if (!loggedIn.has(accessor)) problems.push(`token ${accessor} was added, but no 2xx login handed it out`);
    } else if (old.row !== row.row && !selfChanged.has(accessor)) {
      problems.push(`token ${accessor} changed with no 2xx renew-self or revoke-self: ${old.row} -> ${row.row}`);
    }
  }
  for (const accessor of before.tokens.keys())
    if (!after.tokens.has(accessor)) problems.push(`token ${accessor} disappeared from the store`);
  for (const id of issued)
    if (!after.leases.has(id)) problems.push(`lease ${id} handed out by a 2xx answer is not in the store`);
  for (const accessor of loggedIn)
    if (!after.tokens.has(accessor)) problems.push(`token ${accessor} handed out by a 2xx login is not in the store`);
  return problems;
}

// ---------------------------------------------------------------------------------------------

describe('HTTP fuzzing of every route', () => {
  it(
    `${TOTAL} generated requests: no 5xx, no connection dropped without an answer, no side effect from a refused request`,
    { timeout: LONG ? 1_800_000 : 120_000 },
    async () => {
      console.log(`http-fuzz: FUZZ_SEED=${SEED}, ${TOTAL} requests over ${CONNECTIONS} connections`);
      const arb = requestArb();
      const before = await snapshot();
      const failures: string[] = [];
      const ok: Answered[] = [];
      const statuses = new Map<number, number>();
      let reopened = 0;
      let overtaken = 0;
      let sent = 0;

      let batchStart = -1;
      let batch: FuzzRequest[] = [];
      const requestAt = (i: number): FuzzRequest => {
        const start = i - (i % BATCH);
        if (start !== batchStart) {
          batch = fc.sample(arb, { seed: SEED + start / BATCH, numRuns: BATCH });
          batchStart = start;
        }
        return batch[i - start]!;
      };
      // Workers take requests in order, so batches are made one at a time.
      let next = 0;
      const started = Date.now();

      const worker = async () => {
        let conn = await RawConnection.open(broker.url);
        while (next < TOTAL && failures.length < 20) {
          const i = next++;
          const req = requestAt(i);
          let res: RawResponse;
          try {
            await conn.write(wireBytes(req));
            res = await conn.read(30_000, { head: req.method === 'HEAD', skipInterim: true });
          } catch (err) {
            failures.push(`${describeRequest(i, req)}: no answer: ${(err as Error).message.slice(0, 300)}`);
            conn.close();
            conn = await RawConnection.open(broker.url);
            continue;
          }
          sent++;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (!(res.status >= 200 && res.status < 500))
            failures.push(`${describeRequest(i, req)}: answered ${res.status} ${res.text.slice(0, 300)}`);
          else if (/\n\s+at .+[:(]/.test(res.text))
            failures.push(`${describeRequest(i, req)}: the answer shows a stack: ${res.text.slice(0, 300)}`);
          if (res.status >= 200 && res.status < 300) ok.push({ req, res });
          if (res.status === 409 && /revoked while it was being issued/.test(res.text)) overtaken++;
          // The server may end a connection only after saying so (a parse error, a client's Connection: close).
          if (res.headers.connection?.toLowerCase() === 'close' || conn.ended) {
            if (res.headers.connection?.toLowerCase() !== 'close')
              failures.push(
                `${describeRequest(i, req)}: connection closed after a ${res.status} without Connection: close`,
              );
            conn.close();
            conn = await RawConnection.open(broker.url);
            reopened++;
          }
        }
        conn.close();
      };
      await Promise.all(Array.from({ length: CONNECTIONS }, worker));
      const seconds = (Date.now() - started) / 1000;

      const table = [...statuses]
        .sort(([a], [b]) => a - b)
        .map(([s, n]) => `${s}:${n}`)
        .join(' ');
      const fiveXX = [...statuses].filter(([s]) => s >= 500).reduce((n, [, k]) => n + k, 0);
      recordFigures('http-fuzz', { fuzzRequests: sent, fuzz5xx: fiveXX, seed: SEED });
      console.log(
        `http-fuzz: ${sent} answered in ${seconds.toFixed(1)} s (${Math.round(sent / seconds)}/s), ${reopened} connections reopened; statuses ${table}`,
      );
      expect(failures, `FUZZ_SEED=${SEED}\n${failures.join('\n')}`).toEqual([]);
      expect(sent).toBe(TOTAL);

      // The generator reaches the routes' real work, not only their refusals.
      const issuedOk = ok.filter(({ res }) => typeof res.body?.lease_id === 'string' && res.body.lease_id).length;
      const loginsOk = ok.filter(({ res }) => res.body?.auth?.client_token).length;
      console.log(`http-fuzz: ${issuedOk} leases issued and ${loginsOk} logins by 2xx answers`);
      expect(issuedOk).toBeGreaterThan(0);
      expect(loginsOk).toBeGreaterThan(0);
      for (const status of [200, 204, 400, 403, 404, 405, 413])
        expect(statuses.get(status) ?? 0, `status ${status}`).toBeGreaterThan(0);

      const health = await fetch(`${broker.url}/v1/sys/health`);
      expect(health.status).toBe(200);

      const problems = unexplainedChanges(before, await snapshot(), ok, overtaken);
      expect(problems, problems.join('\n')).toEqual([]);
    },
  );
});
