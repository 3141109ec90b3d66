import type { Command } from 'commander';
import { parseInstant } from '../../audit/audit-query.js';
import { clientFromEnv, type AnswerBody } from '../client.js';
import { ENV_HELP } from '../options.js';
import { printTable } from '../table.js';

const QUERY_EXAMPLE = `
Example: which pipeline had cb_etl_reader_x7…? A database log names a role; ask who leased it:
  credbroker audit query --username cb_etl_reader_x7k2m9
  # time  identity (auth mount)  operation  path  lease  outcome/status — the issue, its renewals, its revocation
Other questions:
  credbroker audit query --identity system:serviceaccount:etl:reader --since 24h
  credbroker audit query --outcome denied --since 1h --path db/creds/
  credbroker audit query --lease db/creds/reader/… --json

--since and --until take an RFC 3339 time (2026-01-31T02:00:00Z) or a duration ago (90s, 15m, 1h, 7d).
Records come oldest first, paged through the API (sudo on sys/broker/audit); the postgres audit sink
must be on. Secret fields in data are HMACs: find one with \`credbroker audit hash\`.
${ENV_HELP}`;

/** The API pages at most this many records at a time. */
const PAGE = 1000;

interface QueryOptions {
  identity?: string;
  lease?: string;
  username?: string;
  path?: string;
  since?: string;
  until?: string;
  outcome?: string;
  limit?: number;
  json?: boolean;
}

function positiveInt(value: string): number {
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new Error(`--limit must be a positive whole number`);
  return Number(value);
}

/** One table row: the columns an operator scans for who had what and when. */
function tableRow(r: AnswerBody): string[] {
  const identity = r.identity ? `${r.identity.name} (${r.identity.root ? 'root' : r.identity.auth_mount})` : '-';
  const result = [r.outcome, r.status].filter((v) => v !== null && v !== undefined).join('/');
  return [r.time, identity, r.operation ?? r.type, r.path ?? '-', r.lease_id ?? '-', result || '-'];
}

async function queryAuditLog(opts: QueryOptions): Promise<void> {
  const now = new Date();
  const params = new URLSearchParams();
  for (const key of ['identity', 'lease', 'username', 'path', 'outcome'] as const) {
    if (opts[key] !== undefined) params.set(key, opts[key]);
  }
  // Relative times are resolved here, once, so every page asks for the same window.
  if (opts.since !== undefined) params.set('since', parseInstant(opts.since, '--since', now).toISOString());
  if (opts.until !== undefined) params.set('until', parseInstant(opts.until, '--until', now).toISOString());
  const client = clientFromEnv();
  const rows: string[][] = [];
  let remaining = opts.limit ?? Infinity;
  let after: string | null = null;
  do {
    params.set('limit', String(Math.min(PAGE, remaining)));
    if (after) params.set('after', after);
    const res = await client.request('GET', `sys/broker/audit?${params}`);
    for (const record of res.data.records as AnswerBody[]) {
      if (opts.json) process.stdout.write(`${JSON.stringify(record)}\n`);
      else rows.push(tableRow(record));
    }
    remaining -= res.data.records.length;
    after = res.data.next;
  } while (after && remaining > 0);
  if (!opts.json) {
    if (rows.length === 0) process.stderr.write('no audit records match\n');
    else printTable(['TIME', 'IDENTITY', 'OPERATION', 'PATH', 'LEASE', 'OUTCOME'], rows);
  }
}

export function addAuditCommand(program: Command): void {
  const audit = program.command('audit').description('audit log tools');
  audit
    .command('hash')
    .argument('<value>', 'a secret (password, key, token) to look for in the audit log')
    .requiredOption('-c, --config <file>', 'the server config holding audit.hmac_key')
    .description('print the HMAC under which the audit log records this value')
    .action(async (value: string, opts: { config: string }) => {
      const { loadConfigFile } = await import('../../config/load.js');
      const { hmacField } = await import('../../audit/hmac.js');
      const config = loadConfigFile(opts.config);
      if (!config.audit) throw new Error(`${opts.config} configures no audit log`);
      process.stdout.write(`${hmacField(config.audit.hmac_key, value)}\n`);
    });
  audit
    .command('query')
    .description('who had what and when: the postgres audit table, filtered (every filter given must match)')
    .option('--identity <name>', 'the identity name as recorded (a service account subject, a JWT sub)')
    .option('--lease <id>', 'one lease id')
    .option('--username <name>', 'a database username: every record of the lease that issued it')
    .option('--path <prefix>', 'a request path prefix, e.g. db/creds/')
    .option('--since <time>', 'from this time: RFC 3339, or a duration ago (1h)')
    .option('--until <time>', 'before this time: RFC 3339, or a duration ago')
    .option('--outcome <outcome>', 'ok, error or denied')
    .option('--limit <n>', 'at most this many records in all', positiveInt)
    .option('--json', 'one JSON record per line instead of a table')
    .addHelpText('after', QUERY_EXAMPLE)
    .action(queryAuditLog);
}
