import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { certAuthMountSchema } from '../../src/auth/auth-config.js';
import { CertAuthMount } from '../../src/auth/cert-login.js';
import { peerCertificatesOf, type PeerCertificates } from '../../src/auth/peer-certificates.js';
import { statusFor } from '../../src/api/error-response.js';
import { uriGlobMatches } from '../../src/auth/uri-glob.js';
import { parseConfig } from '../../src/config/load.js';
import { CertificateRefused, ConfigError, InvalidRequest } from '../../src/errors.js';
import { createCertificateAuthority, type CertificateAuthority } from '../../src/tls/certificates.js';
import { asIssuer, importKey, sign, type Signed } from '../support/signed-certificates.js';

const DAY = 86_400_000;
const SPIFFE_LOADER = 'spiffe://corp/ns/etl/sa/loader';
const peer = (...pems: string[]): PeerCertificates => ({ tls: true, chain: pems.map((p) => new X509Certificate(p)) });

function mount(roles: Record<string, Record<string, unknown>>, now?: () => Date) {
  return new CertAuthMount('cert', certAuthMountSchema.parse({ type: 'cert', roles }), now);
}

function refusal(fn: () => unknown): CertificateRefused {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CertificateRefused);
    return err as CertificateRefused;
  }
  throw new Error('expected a refusal, the login was accepted');
}

let ca: CertificateAuthority;
let otherCa: CertificateAuthority;
let loader: Awaited<ReturnType<CertificateAuthority['issue']>>;

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'ci CA' });
  otherCa = await createCertificateAuthority({ commonName: 'ci CA' }); // same name, other key
  loader = await ca.issue({
    commonName: 'loader',
    uris: [SPIFFE_LOADER],
    dnsNames: ['loader.etl.corp'],
    usage: 'client',
  });
});

describe('a certificate from the role’s CA', () => {
  it('with an allowed SPIFFE URI SAN logs in, named by its SPIFFE ID, with Vault’s metadata', () => {
    const m = mount({
      etl: { certificate: ca.certPem, allowed_uri_sans: ['spiffe://corp/ns/etl/sa/*'], token_policies: ['etl'] },
    });
    const verified = m.verify('etl', peer(loader.certPem));
    expect(verified.role).toBe('etl');
    expect(verified.displayName).toBe('etl');
    expect(verified.identity).toMatchObject({ name: SPIFFE_LOADER, authMount: 'cert', policies: ['etl'], root: false });
    const caKeyId = new x509.X509Certificate(ca.certPem)
      .getExtension(x509.SubjectKeyIdentifierExtension)!
      .keyId.match(/../g)!
      .join(':');
    expect(verified.identity.metadata).toEqual({
      cert_name: 'etl',
      common_name: 'loader',
      serial_number: BigInt(`0x${loader.serialNumber}`).toString(10),
      dns_sans: 'loader.etl.corp',
      uri_sans: SPIFFE_LOADER,
      spiffe_id: SPIFFE_LOADER,
      subject_key_id: '',
      authority_key_id: caKeyId,
    });
  });

  it('without a SPIFFE ID is named by its common name', async () => {
    const plain = await ca.issue({ commonName: 'jenkins-agent-7', usage: 'client' });
    const verified = mount({ ci: { certificate: ca.certPem } }).verify(undefined, peer(plain.certPem));
    expect(verified.identity.name).toBe('jenkins-agent-7');
    expect(verified.identity.metadata.spiffe_id).toBe('');
  });

  it('is refused when it expired, or is not valid yet, whatever the constraints', async () => {
    const expired = await ca.issue({
      commonName: 'loader',
      uris: [SPIFFE_LOADER],
      usage: 'client',
      notBefore: new Date(Date.now() - 10 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const early = await ca.issue({
      commonName: 'loader',
      uris: [SPIFFE_LOADER],
      usage: 'client',
      notBefore: new Date(Date.now() + DAY),
      notAfter: new Date(Date.now() + 10 * DAY),
    });
    const m = mount({ etl: { certificate: ca.certPem } });
    expect(refusal(() => m.verify('etl', peer(expired.certPem))).message).toMatch(
      /^invalid certificate or no client certificate supplied: the certificate expired at \d{4}-/,
    );
    expect(refusal(() => m.verify('etl', peer(early.certPem))).message).toMatch(
      /: the certificate is not valid before \d{4}-/,
    );
  });

  it('is judged by the injected clock: valid today, expired a year on', () => {
    const later = mount({ etl: { certificate: ca.certPem } }, () => new Date(Date.now() + 400 * DAY));
    expect(refusal(() => later.verify('etl', peer(loader.certPem))).message).toMatch(/the certificate expired at/);
  });

  it('is refused when only for servers (extended key usage without clientAuth)', async () => {
    const server = await ca.issue({ commonName: 'loader', usage: 'server' });
    expect(
      refusal(() => mount({ etl: { certificate: ca.certPem } }).verify('etl', peer(server.certPem))).message,
    ).toMatch(/not for client authentication/);
  });

  it('is refused once the role’s CA certificate itself expired', async () => {
    const oldCa = await createCertificateAuthority({
      commonName: 'old CA',
      notBefore: new Date(Date.now() - 30 * DAY),
      notAfter: new Date(Date.now() + DAY),
    });
    const leaf = await oldCa.issue({ commonName: 'x', usage: 'client', notAfter: new Date(Date.now() + 2 * DAY) });
    const m = mount({ r: { certificate: oldCa.certPem } }, () => new Date(Date.now() + 1.5 * DAY));
    expect(refusal(() => m.verify('r', peer(leaf.certPem))).message).toMatch(/the CA certificate CN=old CA expired at/);
  });
});

describe('a certificate the role does not trust', () => {
  it('from another CA (even one with the same name) is refused with Vault’s text and the issuer', async () => {
    const stranger = await otherCa.issue({ commonName: 'loader', uris: [SPIFFE_LOADER], usage: 'client' });
    const err = refusal(() => mount({ etl: { certificate: ca.certPem } }).verify('etl', peer(stranger.certPem)));
    expect(err.message).toBe(
      `invalid certificate or no client certificate supplied: role "etl": it is not signed by the role's CA (issuer: CN=ci CA)`,
    );
    expect(err.certificate).toEqual({ serial_number: stranger.serialNumber, subject: 'CN=loader', issuer: 'CN=ci CA' });
  });

  it('is refused even when the client also sends a look-alike CA certificate of its own', async () => {
    const stranger = await otherCa.issue({ commonName: 'loader', usage: 'client' });
    const m = mount({ etl: { certificate: ca.certPem } });
    expect(() => m.verify('etl', peer(stranger.certPem, otherCa.certPem))).toThrow(CertificateRefused);
  });
});

describe('constraints', () => {
  const roles = () => ({
    etl: {
      certificate: ca.certPem,
      allowed_common_names: ['loader', 'etl-*'],
      allowed_dns_sans: ['*.etl.corp'],
      allowed_uri_sans: ['spiffe://corp/ns/etl/sa/*'],
    },
  });

  it('a certificate meeting every constraint logs in', () => {
    expect(mount(roles()).verify('etl', peer(loader.certPem)).role).toBe('etl');
  });

  it.each([
    ['a disallowed CN', { commonName: 'intruder', uris: [SPIFFE_LOADER], dnsNames: ['a.etl.corp'] }, /common name/],
    ['no DNS SAN', { commonName: 'etl-1', uris: [SPIFFE_LOADER] }, /no DNS SAN .*\(none\)/],
    [
      'a DNS SAN of another domain',
      { commonName: 'etl-1', uris: [SPIFFE_LOADER], dnsNames: ['x.web.corp'] },
      /DNS SAN/,
    ],
    [
      'a SPIFFE ID of another namespace',
      { commonName: 'etl-1', uris: ['spiffe://corp/ns/web/sa/loader'], dnsNames: ['a.etl.corp'] },
      /URI SAN .*ns\/web/,
    ],
    [
      'a SPIFFE ID one segment deeper than the glob',
      { commonName: 'etl-1', uris: ['spiffe://corp/ns/etl/sa/loader/extra'], dnsNames: ['a.etl.corp'] },
      /URI SAN/,
    ],
    [
      'a SPIFFE ID of another trust domain',
      { commonName: 'etl-1', uris: ['spiffe://evil/ns/etl/sa/loader'], dnsNames: ['a.etl.corp'] },
      /URI SAN/,
    ],
  ])('%s is refused with Vault’s constraints text', async (_, leaf, reason) => {
    const cert = await ca.issue({ ...leaf, usage: 'client' });
    const err = refusal(() => mount(roles()).verify('etl', peer(cert.certPem)));
    expect(err.message).toMatch(
      /^no chain matching all constraints could be found for this login certificate: role "etl"/,
    );
    expect(err.message).toMatch(reason);
  });

  it('email SANs are matched too', async () => {
    const m = mount({ r: { certificate: ca.certPem, allowed_email_sans: ['*@corp.example'] } });
    expect(() => m.verify('r', peer(loader.certPem))).toThrow(/no email SAN/);
  });
});

describe('URI SAN globs', () => {
  it.each([
    ['spiffe://corp/ns/etl/sa/*', SPIFFE_LOADER, true],
    ['spiffe://corp/ns/*/sa/loader', SPIFFE_LOADER, true],
    ['spiffe://corp/ns/*/sa/loader', 'spiffe://corp/ns/a/b/sa/loader', false],
    ['spiffe://corp/**', SPIFFE_LOADER, true],
    ['spiffe://corp/ns/etl/sa/*', 'spiffe://corp/ns/etl/sa/', true],
    ['spiffe://corp/ns/etl/sa/load*', SPIFFE_LOADER, true],
    ['spiffe://corp/ns/etl/sa/*er', SPIFFE_LOADER, true],
    ['spiffe://corp/ns/etl/sa/*x', SPIFFE_LOADER, false],
    [SPIFFE_LOADER, SPIFFE_LOADER + 's', false],
  ])('%s against %s → %s', (pattern, value, expected) => {
    expect(uriGlobMatches(pattern, value)).toBe(expected);
  });

  it('agrees with a regular expression on any pattern and value (`*` = [^/]*, `**` = .*)', () => {
    const text = (chars: string[]) => fc.array(fc.constantFrom(...chars), { maxLength: 12 }).map((a) => a.join(''));
    const reference = (pattern: string) =>
      new RegExp(
        `^${pattern
          .split('**')
          .map((part) =>
            part
              .split('*')
              .map((lit) => lit.replace(/[.+?^${}()|[\]\\/]/g, '\\$&'))
              .join('[^/]*'),
          )
          .join('.*')}$`,
        's',
      );
    fc.assert(
      fc.property(text(['a', 'b', '/', '*']), text(['a', 'b', '/']), (pattern, value) => {
        expect(uriGlobMatches(pattern, value)).toBe(reference(pattern).test(value));
      }),
      { numRuns: 3000 },
    );
  });

  it('takes linear time on a value built to make a backtracking matcher explode', () => {
    const started = performance.now();
    expect(uriGlobMatches('*a*a*a*a*a*a*a*a*b', 'a'.repeat(20_000))).toBe(false);
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('an intermediate CA between the leaf and the role’s CA', () => {
  let intermediate: Signed;
  let viaIntermediate: Signed;

  beforeAll(async () => {
    const root = { certPem: ca.certPem, signingKey: await importKey(ca.keyPem) };
    intermediate = await sign(root, { commonName: 'ci intermediate', ca: true });
    viaIntermediate = await sign(asIssuer(intermediate), { commonName: 'runner', uris: [SPIFFE_LOADER] });
  });

  it('logs in when the client sends the intermediate along', () => {
    const m = mount({ etl: { certificate: ca.certPem, allowed_uri_sans: ['spiffe://corp/ns/etl/sa/*'] } });
    expect(m.verify('etl', peer(viaIntermediate.certPem, intermediate.certPem)).identity.name).toBe(SPIFFE_LOADER);
  });

  it('is refused when the client leaves the intermediate out', () => {
    const m = mount({ etl: { certificate: ca.certPem } });
    expect(refusal(() => m.verify('etl', peer(viaIntermediate.certPem))).message).toMatch(
      /not signed by the role's CA/,
    );
  });

  it('logs in without it when the role trusts the intermediate itself', () => {
    const m = mount({ etl: { certificate: intermediate.certPem } });
    expect(m.verify('etl', peer(viaIntermediate.certPem)).role).toBe('etl');
  });

  it('is refused when the “intermediate” is not a CA (basic constraints), even with the certSign key usage', async () => {
    const root = { certPem: ca.certPem, signingKey: await importKey(ca.keyPem) };
    const notCa = await sign(root, { commonName: 'just a leaf', certSign: true });
    const forged = await sign(asIssuer(notCa), { commonName: 'runner' });
    const m = mount({ etl: { certificate: ca.certPem } });
    expect(() => m.verify('etl', peer(forged.certPem, notCa.certPem))).toThrow(CertificateRefused);
  });

  it('is refused when the intermediate expired', async () => {
    const root = { certPem: ca.certPem, signingKey: await importKey(ca.keyPem) };
    const old = await sign(root, {
      commonName: 'old intermediate',
      ca: true,
      notBefore: new Date(Date.now() - 10 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    const leaf = await sign(asIssuer(old), { commonName: 'runner' });
    const m = mount({ etl: { certificate: ca.certPem } });
    expect(refusal(() => m.verify('etl', peer(leaf.certPem, old.certPem))).message).toMatch(
      /the intermediate CN=old intermediate expired at/,
    );
  });
});

describe('a pinned leaf certificate', () => {
  it('logs in as itself; another certificate of the same CA does not', async () => {
    const sibling = await ca.issue({ commonName: 'loader', uris: [SPIFFE_LOADER], usage: 'client' });
    const m = mount({ pinned: { certificate: loader.certPem } });
    expect(m.verify('pinned', peer(loader.certPem)).identity.name).toBe(SPIFFE_LOADER);
    expect(refusal(() => m.verify('pinned', peer(sibling.certPem))).message).toMatch(
      /role "pinned": it is not the certificate the role pins/,
    );
  });

  it('is still refused once it expired', () => {
    const m = mount({ pinned: { certificate: loader.certPem } }, () => new Date(Date.now() + 400 * DAY));
    expect(() => m.verify('pinned', peer(loader.certPem))).toThrow(/the certificate expired at/);
  });
});

describe('choosing the role', () => {
  const roles = () => ({
    web: { certificate: otherCa.certPem, token_policies: ['web'] },
    strict: { certificate: ca.certPem, allowed_common_names: ['nobody'], token_policies: ['strict'] },
    etl: { certificate: ca.certPem, token_policies: ['etl'] },
    also: { certificate: ca.certPem, token_policies: ['also'] },
  });

  it('without a name, the first role in config order that accepts the certificate (as Vault)', () => {
    expect(mount(roles()).verify(undefined, peer(loader.certPem)).role).toBe('etl');
    expect(mount(roles()).verify('', peer(loader.certPem)).role).toBe('etl');
  });

  it('with a name, that role only: another role that would accept it does not help', () => {
    expect(mount(roles()).verify('also', peer(loader.certPem)).identity.policies).toEqual(['also']);
    const err = refusal(() => mount(roles()).verify('strict', peer(loader.certPem)));
    expect(err.message).toMatch(/^no chain matching all constraints .*: role "strict": no common name/);
    expect(err.message).not.toMatch(/"etl"/);
  });

  it('a refusal by every role names each role’s reason', async () => {
    const stranger = await createCertificateAuthority({ commonName: 'stranger CA' });
    const cert = await stranger.issue({ commonName: 'x', usage: 'client' });
    const err = refusal(() => mount(roles()).verify(undefined, peer(cert.certPem)));
    expect(err.message).toMatch(
      /^invalid certificate or no client certificate supplied: role "web": .*; role "strict": /,
    );
  });

  it('a CA bundle trusts each of its CAs', async () => {
    const stranger = await otherCa.issue({ commonName: 'x', usage: 'client' });
    const m = mount({ both: { certificate: ca.certPem + otherCa.certPem } });
    expect(m.verify('both', peer(stranger.certPem)).role).toBe('both');
    expect(m.verify('both', peer(loader.certPem)).role).toBe('both');
  });

  it('an unknown name, or one that is not a string, is a 400', () => {
    expect(() => mount(roles()).verify('nope', peer(loader.certPem))).toThrow(InvalidRequest);
    expect(() => mount(roles()).verify('nope', peer(loader.certPem))).toThrow(/role "nope" could not be found/);
    expect(() => mount(roles()).verify(['etl'], peer(loader.certPem))).toThrow(/"name" must be a string/);
  });
});

describe('no client certificate', () => {
  it('over TLS without a certificate is a clear 400', () => {
    const err = (() => {
      try {
        mount({ etl: { certificate: ca.certPem } }).verify('etl', { tls: true, chain: [] });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidRequest);
    expect((err as Error).message).toBe('cert login needs a TLS client certificate: none was presented');
  });

  it('over plain http is a clear 400', () => {
    expect(() => mount({ etl: { certificate: ca.certPem } }).verify('etl', { tls: false, chain: [] })).toThrow(
      /cert login needs a TLS client certificate: this request came over plain http/,
    );
  });
});

describe('the config of a cert mount', () => {
  const load =
    (role: Record<string, unknown>, policies: Record<string, unknown> = {}, tls = true) =>
    () =>
      parseConfig(
        JSON.stringify({
          ...(tls
            ? { listen: { tls: { cert_file: '/etc/credbroker/tls.crt', key_file: '/etc/credbroker/tls.key' } } }
            : {}),
          store: { url: 'postgres://broker@localhost/credbroker' },
          root_token: '${env:ROOT}',
          auth: { ci: { type: 'cert', roles: { runner: role } } },
          policies,
        }),
        { ROOT: 'root-token-0123456789abcdef' },
      );

  it('accepts a CA certificate', () => {
    expect(load({ certificate: ca.certPem })).not.toThrow();
  });

  it.each([
    ['garbage', 'not a certificate'],
    ['a corrupt body', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
    ['a bundle whose second certificate is cut short', () => ca.certPem + otherCa.certPem.slice(0, 200)],
  ])('refuses %s at load, naming the key', (_, given) => {
    const bad = typeof given === 'function' ? given() : given;
    expect(load({ certificate: bad })).toThrow(ConfigError);
    expect(load({ certificate: bad })).toThrow(/^auth\.ci\.roles\.runner\.certificate: not a PEM certificate/m);
  });

  it('refuses a private key in the certificate, and an unknown token policy', () => {
    expect(load({ certificate: ca.certPem + ca.keyPem })).toThrow(/certificate: holds a private key/);
    expect(load({ certificate: ca.certPem, token_policies: ['nope'] })).toThrow(
      /auth\.ci\.roles\.runner\.token_policies: unknown policy "nope"/,
    );
  });

  it('refuses a cert mount on a broker without listen.tls: no certificate could reach it', () => {
    expect(load({ certificate: ca.certPem }, {}, false)).toThrow(/^auth\.ci\.type: a cert mount needs listen\.tls/m);
  });

  it('refuses an unknown field (a jwt role’s, say) by name', () => {
    expect(load({ certificate: ca.certPem, bound_audiences: ['x'] })).toThrow(/bound_audiences/);
  });
});

describe('what a refusal answers', () => {
  it('a certificate refused is a 403, a missing one a 400, never a 500', () => {
    const m = mount({ etl: { certificate: ca.certPem, allowed_common_names: ['nobody'] } });
    expect(statusFor(refusal(() => m.verify('etl', peer(loader.certPem))))).toBe(403);
    let missing: unknown;
    try {
      m.verify('etl', { tls: true, chain: [] });
    } catch (err) {
      missing = err;
    }
    expect(statusFor(missing)).toBe(400);
  });

  it('a socket that is not TLS, or a TLS one whose client sent nothing, yields no certificate', () => {
    expect(peerCertificatesOf({})).toEqual({ tls: false, chain: [] });
    expect(peerCertificatesOf({ encrypted: false, getPeerCertificate: () => ({}) as never })).toEqual({
      tls: false,
      chain: [],
    });
    expect(peerCertificatesOf({ encrypted: true, getPeerCertificate: () => ({}) as never })).toEqual({
      tls: true,
      chain: [],
    });
  });
});
