import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../../../../src/broker.js';
import { randomName } from '../../../../src/random.js';
import { startAwsEndpoint, type AwsEndpoint } from '../../../../test/support/aws-endpoint/index.js';
import { ROLE_ARN, callerArn, startAwsBroker } from '../../../../test/support/aws-broker.js';
import { api } from '../../../../test/support/broker.js';
import { freshStoreDatabase } from '../../../../test/support/pg.js';

const HOURS = 3600_000;

let endpoint: AwsEndpoint;
let broker: Broker;

beforeAll(async () => {
  endpoint = await startAwsEndpoint({ roles: [{ arn: ROLE_ARN }] });
  broker = await startAwsBroker(endpoint, await freshStoreDatabase('awssweep'), {
    ci: { credential_type: 'iam_user', default_ttl: '15m' },
    ops: { credential_type: 'iam_user', user_path: '/ops/', default_ttl: '15m' },
    deploy: { credential_type: 'assumed_role', role_arns: [ROLE_ARN], default_ttl: '15m' },
  });
});
afterAll(async () => {
  await broker?.close();
  await endpoint?.close();
});

/** A user made behind the broker's back, created `ageMs` ago as IAM records it. */
function makeUser(name: string, path: string, ageMs: number): string {
  endpoint.state.createUser(name, { path }).createDate = new Date(Date.now() - ageMs);
  return name;
}

describe('orphan sweep on IAM users', () => {
  it("drops only the broker-named users under its paths that no live lease owns and IAM's CreateDate puts past the grace", async () => {
    const issued = await api(broker, 'PUT', 'aws/creds/ci', {});
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const sts = await api(broker, 'PUT', 'aws/sts/deploy', {});
    expect(sts.status, JSON.stringify(sts.body)).toBe(200);
    const leased = issued.body.data.access_key as string;
    const leasedUser = [...endpoint.state.users.values()].find((u) => u.path === '/credbroker/')!;
    leasedUser.createDate = new Date(Date.now() - 2 * HOURS); // old: only its lease protects it

    const orphan = makeUser(`cb-ci-${randomName(12)}`, '/credbroker/', 2 * HOURS);
    const orphanOps = makeUser(`cb-ops-${randomName(12)}`, '/ops/', 2 * HOURS);
    const young = makeUser(`cb-ci-${randomName(12)}`, '/credbroker/', 0); // within the default hour
    const elsewhere = makeUser(`cb-ci-${randomName(12)}`, '/people/', 2 * HOURS);
    const human = makeUser('alice', '/credbroker/', 2 * HOURS);

    const report = await broker.sweeper.sweepOnce({ apply: false });
    expect(report).toHaveLength(1);
    expect(report[0]!.found.map((f) => f.name).sort()).toEqual([orphan, orphanOps].sort());
    expect(report[0]!.found.every((f) => f.createdAt instanceof Date && f.firstSeen === undefined)).toBe(true);

    const applied = await broker.sweeper.sweepOnce({ apply: true, mount: 'aws' });
    expect(applied[0]!.found.map((f) => [f.name, f.dropped]).sort()).toEqual(
      [
        [orphan, true],
        [orphanOps, true],
      ].sort(),
    );
    const left = new Set(endpoint.state.users.keys());
    expect(left.has(orphan) || left.has(orphanOps)).toBe(false);
    for (const kept of [leasedUser.userName, young, elsewhere, human]) expect(left.has(kept)).toBe(true);
    expect(await callerArn(endpoint, issued.body.data)).toContain(leasedUser.userName);
    expect(leased).toMatch(/^AKIA/);
  });
});
