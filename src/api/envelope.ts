import type { JsonValue } from '../engines.js';

/** Vault's response envelope; every field present, as Vault clients decode it. */
export function envelope(
  requestId: string,
  fields: {
    leaseId?: string;
    leaseDuration?: number;
    renewable?: boolean;
    data?: Record<string, JsonValue> | null;
    warnings?: string[];
  },
) {
  return {
    request_id: requestId,
    lease_id: fields.leaseId ?? '',
    renewable: fields.renewable ?? false,
    lease_duration: fields.leaseDuration ?? 0,
    data: fields.data ?? null,
    wrap_info: null,
    warnings: fields.warnings?.length ? fields.warnings : null,
    auth: null,
  };
}
