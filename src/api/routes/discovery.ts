import { z } from 'zod';
import type { JsonValue } from '../../engines.js';
import { UnknownPath } from '../../errors.js';
import type { LeaseService } from '../../leases/lease-service.js';
import { mountAccessor, stableUuid } from '../../mount-description.js';
import type { Mount, MountRegistry } from '../../mounts.js';
import { envelope } from '../envelope.js';
import { parseBody } from '../request-schemas.js';
import { authzOf, iso, type Handler, type Reply, type Route } from './route.js';

export interface DiscoveryDeps {
  leases: LeaseService;
  mounts: MountRegistry;
  /** Auth mounts by name, each with its configured `type` (jwt, kubernetes, cert…). */
  authMounts: Readonly<Record<string, { type: string }>>;
  version: string;
}

/** Vault's default for sys/leases?type=irrevocable; `limit=none` lifts it. */
const IRREVOCABLE_LIST_LIMIT = 10_000;

const pathList = z.union([z.string().min(1).max(1024), z.array(z.string().min(1).max(1024)).max(256)]);
/** `paths`, or the older single `path` (a string, or a comma-separated list as Vault reads it). */
const capabilitiesRequest = z
  .object({ paths: pathList.optional(), path: pathList.optional() })
  .passthrough()
  .transform(({ paths, path }, ctx) => {
    const given = paths ?? path;
    const list = (typeof given === 'string' ? given.split(',') : (given ?? [])).map((p) => p.trim()).filter(Boolean);
    if (list.length === 0) ctx.addIssue({ code: 'custom', message: 'paths must be supplied' });
    return list.map((p) => p.replace(/^\/+/, ''));
  });

const irrevocableQuery = z
  .object({
    type: z.string().optional(),
    include_child_namespaces: z.string().optional(),
    limit: z
      .string()
      .regex(/^(none|[1-9]\d{0,8})$/i, 'limit must be "none" or a positive integer')
      .optional(),
  })
  .passthrough();

/** Vault answers sys/leases/count and sys/leases only for type=irrevocable; anything else finds no value (404). */
const isIrrevocable = (type: string | undefined) => type?.toLowerCase() === 'irrevocable';
const NOT_IRREVOCABLE: Reply = {
  status: 404,
  body: { errors: ['type=irrevocable is required: only irrevocable leases are counted and listed'] },
};

/** Vault's sys/mounts entry; `options.credbroker_engine` says which engine really serves it. */
function mountEntry(mount: Mount, version: string): Record<string, JsonValue> {
  const d = mount.description;
  return {
    accessor: d.accessor,
    // TTLs are per role here (`<mount>/roles/<name>`); 0 is Vault's "the system default".
    config: { default_lease_ttl: 0, max_lease_ttl: 0, force_no_cache: false },
    description: '',
    external_entropy_access: false,
    local: false,
    options: { ...d.options, credbroker_engine: mount.type },
    plugin_version: '',
    running_plugin_version: `v${version}+builtin.credbroker`,
    running_sha256: '',
    seal_wrap: false,
    type: d.vaultType,
    uuid: d.uuid,
    deprecation_status: 'supported',
  };
}

function authEntry(name: string, type: string): Record<string, JsonValue> {
  return {
    accessor: mountAccessor(`auth_${type}`, `auth/${name}`),
    config: { default_lease_ttl: 0, max_lease_ttl: 0, force_no_cache: false, token_type: 'default-service' },
    description: name === 'token' ? 'token based credentials' : '',
    external_entropy_access: false,
    local: false,
    options: null,
    seal_wrap: false,
    type,
    uuid: stableUuid(`auth:${name}`),
  };
}

/** Data at the top level and under `data`, as Vault answers its older sys/ reads. */
const bothLevels = (requestId: string, data: Record<string, JsonValue>): Reply => ({
  status: 200,
  body: { ...data, ...envelope(requestId, { data }) },
});

/** Vault's discovery calls: mounts, auth methods, roles, irrevocable leases, a token's own capabilities. */
export function discoveryRoutes(deps: DiscoveryDeps): Route[] {
  const requireMount = (name: string, path: string): Mount => {
    const mount = deps.mounts.get(name);
    if (!mount) throw new UnknownPath(path);
    return mount;
  };

  const listIrrevocable: Handler = async (ctx) => {
    authzOf(ctx).require('sys/leases', ['read', 'sudo']);
    const q = parseBody(irrevocableQuery, ctx.req.query);
    if (!isIrrevocable(q.type)) return NOT_IRREVOCABLE;
    const limit = q.limit === undefined ? IRREVOCABLE_LIST_LIMIT : q.limit.toLowerCase() === 'none' ? null : +q.limit;
    // One more than the limit: whether the list was cut short, without counting everything.
    const found = await deps.leases.irrevocable('', limit === null ? null : limit + 1);
    const shown = limit === null ? found : found.slice(0, limit);
    const leases = shown.map((lease) => ({
      lease_id: lease.id,
      mount_id: mountAccessor(deps.mounts.get(lease.mount)?.description.vaultType ?? lease.mount, lease.mount),
      error: lease.lastError ?? '',
      // Extensions: what an operator acts on.
      expire_time: iso(lease.expiresAt),
      mount: lease.mount,
      role: lease.role,
      attempts: lease.attempts,
    }));
    const warnings =
      limit !== null && found.length > limit
        ? [`more than ${limit} irrevocable leases: showing the first ${limit} by lease id; list all with limit=none`]
        : [];
    return {
      status: 200,
      body: envelope(ctx.requestId, { data: { lease_count: leases.length, leases }, warnings }),
    };
  };

  return [
    {
      pattern: /^sys\/mounts$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/mounts', ['read']);
          const data = Object.fromEntries(deps.mounts.all().map((m) => [`${m.name}/`, mountEntry(m, deps.version)]));
          return bothLevels(ctx.requestId, data);
        },
      },
    },
    {
      pattern: /^sys\/auth$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/auth', ['read']);
          const data: Record<string, JsonValue> = { 'token/': authEntry('token', 'token') };
          for (const [name, { type }] of Object.entries(deps.authMounts)) data[`${name}/`] = authEntry(name, type);
          return bothLevels(ctx.requestId, data);
        },
      },
    },
    {
      pattern: /^sys\/leases\/count$/,
      methods: {
        GET: async (ctx) => {
          authzOf(ctx).require('sys/leases/count', ['read', 'sudo']);
          if (!isIrrevocable(parseBody(irrevocableQuery, ctx.req.query).type)) return NOT_IRREVOCABLE;
          const byMount = await deps.leases.irrevocableCounts();
          const counts: Record<string, number> = {};
          let total = 0;
          for (const [mount, n] of byMount) {
            const accessor = mountAccessor(deps.mounts.get(mount)?.description.vaultType ?? mount, mount);
            counts[accessor] = (counts[accessor] ?? 0) + n;
            total += n;
          }
          return {
            status: 200,
            body: envelope(ctx.requestId, {
              data: { lease_count: total, counts, counts_by_mount: Object.fromEntries(byMount) },
            }),
          };
        },
      },
    },
    { pattern: /^sys\/leases$/, methods: { GET: listIrrevocable } },
    {
      // The caller's own token: no policy is needed to ask what one may do (Vault's default policy allows it).
      pattern: /^sys\/capabilities-self$/,
      methods: {
        PUT: async (ctx) => {
          const paths = parseBody(capabilitiesRequest, ctx.req.body);
          const data: Record<string, JsonValue> = {};
          for (const path of paths) data[path] = authzOf(ctx).capabilitiesOn(path);
          if (paths.length === 1) data.capabilities = data[paths[0]!]!;
          return bothLevels(ctx.requestId, data);
        },
      },
    },
    {
      pattern: /^([^/]+)\/roles\/?$/,
      methods: {
        LIST: async (ctx) => {
          const [name] = ctx.params as [string];
          authzOf(ctx).requireOnAny([`${name}/roles`, `${name}/roles/`], ['list']);
          const keys = [...requireMount(name, `${name}/roles`).description.roles.keys()].sort();
          if (keys.length === 0) return { status: 404, body: { errors: [] } };
          return { status: 200, body: envelope(ctx.requestId, { data: { keys } }) };
        },
      },
    },
    {
      pattern: /^([^/]+)\/roles\/([^/]+)$/,
      methods: {
        GET: async (ctx) => {
          const [name, role] = ctx.params as [string, string];
          authzOf(ctx).require(`${name}/roles/${role}`, ['read']);
          const described = requireMount(name, `${name}/roles/${role}`).description.roles.get(role);
          // Vault answers an unknown role with an empty 404.
          if (!described) return { status: 404, body: { errors: [] } };
          return { status: 200, body: envelope(ctx.requestId, { data: described }) };
        },
      },
    },
  ];
}
