import Handlebars from 'handlebars';
import { formatCredential } from '../cli/credential-format.js';
import type { CredentialEnvelope } from '../engines.js';

/** What one file of a lease holds: a named format, or a template. */
export interface FileContentSpec {
  format?: string;
  template?: string;
  profile?: string;
}

/**
 * Go's `{{ .username }}` as Handlebars' `{{ username }}`, and a lone `.` (Go's current value) as
 * `this`: a dot that starts a field inside a mustache is dropped. Only the field syntax is
 * translated; the rest (`{{#if .sslmode}}…{{/if}}`) is Handlebars' own.
 */
export function goFieldsToHandlebars(template: string): string {
  return template.replace(/\{\{(~?[#/^]?)([^}]*)\}\}/g, (_, open: string, body: string) => {
    const translated = body.replace(/(^|[\s(])\.(?=[A-Za-z_]|$|[\s)~])/g, (m, before: string, offset: number) => {
      const next = body[offset + m.length];
      return next === undefined || /[\s)~]/.test(next) ? `${before}this` : before;
    });
    return `{{${open}${translated}}}`;
  });
}

/**
 * Compiles a template with Handlebars (a template library, not a parser of ours). Values go in
 * raw (`noEscape`: a config file is not HTML), and a field the credential lacks is an error
 * (`strict`) rather than an empty string in a connection line.
 */
export function compileTemplate(template: string): (data: Record<string, unknown>) => string {
  const source = goFieldsToHandlebars(template);
  // Parsing now makes a syntax error a config error at start, not a failure at the first lease.
  Handlebars.parse(source);
  return Handlebars.compile(source, { noEscape: true, strict: true });
}

/** The text of one file for an issued credential; an error names the format, never a value. */
export function renderFile(envelope: CredentialEnvelope, spec: FileContentSpec, now = new Date()): string {
  if (spec.template !== undefined) {
    const render = compileTemplate(spec.template);
    const fields = { ...envelope.data, lease_id: envelope.lease_id, lease_duration: envelope.lease_duration };
    try {
      return render(fields);
    } catch (err) {
      // Handlebars' strict-mode message names the missing field and quotes the template, not the data.
      throw new Error(`template: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return formatCredential(envelope, spec.format!, { profile: spec.profile, now });
}
