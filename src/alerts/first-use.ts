import type { Logger } from 'pino';
import type { AuditRecord } from '../audit/record.js';
import { identityKey, type Clock, type Detector, type EmitAlert } from './alert.js';
import { isIssue } from './issue-rate.js';
import type { SeenKind } from './seen-store.js';
import { sourceNetwork } from './source-network.js';

export interface FirstUseConfig {
  role: boolean;
  network: boolean;
  ipv4_prefix: number;
  ipv6_prefix: number;
}

/** Pairs remembered in memory; past this the oldest are forgotten and cost one store query when seen again. */
const MAX_CACHED = 50_000;

/**
 * Fires the first time an identity issues from a role (`<mount>/creds/<role>`), and the first
 * time an identity that has used other networks is seen from a new one. The store decides
 * "first" (markSeen's INSERT … ON CONFLICT DO NOTHING), so of several replicas exactly one
 * reports a pair; a cache in front means the store is asked only about pairs this process has not seen.
 */
export function firstUseDetector(
  config: FirstUseConfig,
  deps: {
    now: Clock;
    emit: EmitAlert;
    log: Logger;
    markSeen: (pair: {
      kind: SeenKind;
      identity: string;
      value: string;
      now: number;
    }) => Promise<{ first: boolean; hadOthers: boolean }>;
  },
): Detector {
  const cached = new Set<string>();
  const check = (kind: SeenKind, record: AuditRecord, value: string) => {
    const identity = identityKey(record.identity!);
    const key = `${kind}\u0000${identity}\u0000${value}`;
    if (cached.has(key)) return;
    cached.add(key);
    if (cached.size > MAX_CACHED) cached.delete(cached.values().next().value!);
    const now = deps.now();
    deps.markSeen({ kind, identity, value, now }).then(
      ({ first, hadOthers }) => {
        if (!first || (kind === 'network' && !hadOthers)) return;
        deps.emit({
          detector: 'first_use',
          severity: 'info',
          subject: `${identity} ${kind} ${value}`,
          summary:
            kind === 'role'
              ? `${identity} issued from ${value} for the first time`
              : `${identity} was seen from a new network ${value} (${record.remote_address ?? '?'})`,
          at: now,
          identity: record.identity,
          details: { kind, value },
        });
      },
      (err: unknown) => {
        // Asked again next time it is seen.
        cached.delete(key);
        deps.log.warn({ code: (err as { code?: unknown }).code ?? (err as Error).name }, 'first-use check failed');
      },
    );
  };
  return {
    name: 'first_use',
    observe(record: AuditRecord) {
      if (record.type !== 'response' || !record.identity || record.outcome !== 'ok') return;
      if (config.role && isIssue(record)) check('role', record, record.path!);
      if (config.network && record.remote_address) {
        const network = sourceNetwork(record.remote_address, config.ipv4_prefix, config.ipv6_prefix);
        if (network) check('network', record, network);
      }
    },
  };
}
