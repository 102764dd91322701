import { afterAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { groupHelpers } from '../helpers/groups.ts';
import { startOwnRedisServer, type OwnRedis } from '../helpers/redis-server.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';
import { workerProcesses } from '../helpers/worker-processes.ts';

/**
 * Group sends while worker processes are killed with SIGKILL and the transport drops, duplicates and
 * reorders: the group actor's commit and outbox (src/runtime/group-host.ts) make every member device show
 * each message exactly once, and the business hear of each as a group's message, never as failed.
 */
describe('group sends through a lossy transport and workers killed with SIGKILL', () => {
  let redis: OwnRedis | undefined;
  let sys: TestSystem | undefined;
  const workers = workerProcesses(() => sys!.childEnv());
  let killer: ReturnType<typeof workers.rolling> | undefined;
  const g = groupHelpers(() => sys!);

  afterAll(async () => {
    killer?.stop();
    await workers.stopAll();
    await sys?.close();
    await redis?.stop();
  });

  it('each member device shows each message once', async () => {
    redis = await startOwnRedisServer();
    // A killed worker's leases lapse in 3 s here instead of 15.
    sys = await startSystem({
      workers: false, redisUrl: redis.url,
      env: { SEALPOST_RETRANSMIT_BASE_MS: '400', SEALPOST_RETRANSMIT_MAX_MS: '1500', SEALPOST_BUNDLE_RETRY_MS: '300', SEALPOST_LEASE_MS: '3000' },
    });
    const s = sys;
    killer = workers.rolling(2);
    const groups = [await g.create('one'), await g.create('two')];
    const members = new Map<string, [string, number][]>();
    for (const [i, group] of groups.entries()) {
      const viewers: [string, number][] = [];
      for (let u = 0; u < 8; u++) {
        const wa = await createDevice(s.platformUrl, `+155587${i}${String(u).padStart(4, '0')}`);
        viewers.push([wa, 1]);
        // Every other member reads on a laptop too.
        if (u % 2 === 0) viewers.push([wa, (await g.sim('POST', `/sim/devices/${wa}/linked`, {})).json.device_id as number]);
        await g.join(wa, group);
      }
      members.set(group.group_id, viewers);
    }
    killer.killEvery(2000, 4);
    await g.sim('POST', '/sim/faults', { drop: 0.2, duplicate: 0.1, reorder: true });
    const bodies = new Map<string, string[]>();
    const wamids: string[] = [];
    await Promise.all(groups.map(async (group, i) => {
      const list: string[] = [];
      for (let m = 0; m < 10; m++) {
        list.push(`g${i}-m${m}`);
        wamids.push(await g.sendToGroup(group.group_id, `g${i}-m${m}`));
      }
      bodies.set(group.group_id, list);
    }));
    await waitFor(async () => {
      for (const group of groups) {
        for (const [wa, d] of members.get(group.group_id)!) if ((await g.shown(wa, group.group_id, d)).length < 10) return false;
      }
      return true;
    }, 'every member device to show every message', 240_000, 500);
    await waitFor(() => wamids.every((w) => g.statuses(w).some((x) => x.status === 'delivered')), 'every message reported delivered', 120_000, 500);
    killer.stop();
    await g.sim('POST', '/sim/faults', {});
    expect(killer.kills()).toBeGreaterThan(0);
    for (const group of groups) {
      for (const [wa, d] of members.get(group.group_id)!) {
        const shown = await g.shown(wa, group.group_id, d);
        expect(shown.map((m) => m.body).sort(), `${wa}/${d}`).toEqual([...bodies.get(group.group_id)!].sort());
        expect(new Set(shown.map((m) => m.id)).size).toBe(10);
      }
    }
    for (const w of wamids) {
      expect(g.statuses(w).map((x) => x.status)).not.toContain('failed');
      for (const x of g.statuses(w)) expect(x.recipient_type).toBe('group');
    }
  }, 360_000);
});
