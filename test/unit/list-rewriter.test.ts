import { describe, expect, it } from 'vitest';
import { ListRewriter } from '../../src/api/list-method.js';

/** Feeds the input in the given pieces and returns everything the parser would have been handed. */
function rewrite(input: string, pieces: number[] = []): string {
  const r = new ListRewriter();
  const bytes = Buffer.from(input, 'latin1');
  const out: Buffer[] = [];
  let from = 0;
  for (const at of [...pieces, bytes.length]) {
    out.push(r.push(bytes.subarray(from, at)));
    from = at;
  }
  out.push(r.flush());
  return Buffer.concat(out).toString('latin1');
}

const list = 'LIST /v1/sys/leases/lookup/a/ HTTP/1.1\r\nHost: x\r\n\r\n';
const listAsGet = 'GET /v1/sys/leases/lookup/a/?list=true HTTP/1.1\r\nHost: x\r\n\r\n';
const bodyWithList = '{"x":"\r\nLIST /v1/ HTTP/1.1\r\n\r\n"}';
const put = `PUT /v1/sys/leases/revoke HTTP/1.1\r\nHost: x\r\nContent-Length: ${bodyWithList.length}\r\n\r\n${bodyWithList}`;
const chunked = `POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLIST \r\n${bodyWithList.length.toString(16)};ext=1\r\n${bodyWithList}\r\n0\r\nTrailer: LIST x\r\n\r\n`;
const get = 'GET /v1/db/creds/r HTTP/1.1\r\nHost: x\r\n\r\n';

describe('ListRewriter', () => {
  const stream = [list, put, list, chunked, '\r\n', list, get, list].join('');
  const expected = [listAsGet, put, listAsGet, chunked, '\r\n', listAsGet, get, listAsGet].join('');

  it('rewrites LIST request lines and nothing else, in one piece', () => {
    expect(rewrite(stream)).toBe(expected);
  });

  it('gives the same bytes whatever the split into reads: at every position, and one byte at a time', () => {
    for (let i = 1; i < stream.length; i++) expect(rewrite(stream, [i]), `split at ${i}`).toBe(expected);
    expect(rewrite(stream, [...Array(stream.length).keys()].slice(1))).toBe(expected);
  });

  it('appends to a query the target already has', () => {
    expect(rewrite('LIST /v1/a/?x=1 HTTP/1.1\r\n\r\n')).toBe('GET /v1/a/?x=1&list=true HTTP/1.1\r\n\r\n');
  });

  it('keeps bare LF line endings as they are', () => {
    expect(rewrite('LIST /v1/a/ HTTP/1.1\nHost: x\n\nLIST /v1/b/ HTTP/1.1\n\n')).toBe(
      'GET /v1/a/?list=true HTTP/1.1\nHost: x\n\nGET /v1/b/?list=true HTTP/1.1\n\n',
    );
  });

  it('stops rewriting after framing it cannot be sure of, leaving the parser to refuse it', () => {
    for (const headers of [
      'Content-Length: 5\r\nContent-Length: 6',
      'Content-Length: -1',
      'Transfer-Encoding: chunked\r\nContent-Length: 3',
      'Transfer-Encoding: gzip',
      'X-A: 1\r\n folded',
    ]) {
      const input = `PUT /v1/x HTTP/1.1\r\n${headers}\r\n\r\nLIST /v1/a/ HTTP/1.1\r\n\r\n`;
      expect(rewrite(input), headers).toBe(input);
    }
    const connect = 'CONNECT a:1 HTTP/1.1\r\n\r\nLIST /v1/a/ HTTP/1.1\r\n\r\n';
    expect(rewrite(connect)).toBe(connect);
  });

  it('passes an over-long line through unchanged and stops rewriting', () => {
    const input = `LIST /${'a'.repeat(70_000)} HTTP/1.1\r\n\r\n${list}`;
    expect(rewrite(input, [10, 40_000])).toBe(input);
  });
});
