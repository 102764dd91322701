import { afterAll, describe, expect, it } from 'vitest';
import { SHARDS } from '../../src/runtime/shards.ts';
import { createDevice, deviceMessages, deviceStats, openWindows, sendText, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';
import { workerProcesses } from '../helpers/worker-processes.ts';

const CONVERSATIONS = 60;
const PER_CONVERSATION = 5;

/**
 * A worker process killed with SIGKILL while its shards' drains hold claims on many conversations at once:
 * another process takes the lapsed claims up, and every device shows every message once, in API order.
 */
describe('a worker killed in the middle of a batch spanning many conversations', () => {
  let sys: TestSystem;
  const workers = workerProcesses(() => sys.childEnv());
  // Short leases, so a dead or paused worker's claims and leases lapse quickly.
  const spawnWorker = () => workers.spawn({ SEALPOST_LEASE_MS: '3000' });

  afterAll(async () => {
    await workers.stopAll();
    await sys?.close();
  });

  it('loses and duplicates nothing', async () => {
    sys = await startSystem({ workers: false, env: { SEALPOST_RETRANSMIT_BASE_MS: '1000', SEALPOST_RETRANSMIT_MAX_MS: '2000' } });
    const users = await Promise.all(Array.from({ length: CONVERSATIONS }, (_, i) => createDevice(sys.platformUrl, `+1555830${String(i).padStart(4, '0')}`)));
    // The users write first (the window opens) through a worker that then stops, so the sends below wait.
    const opener = spawnWorker();
    await openWindows(sys, users);
    opener.kill('SIGTERM');
    await new Promise((r) => opener.once('exit', r));
    const sent = new Map<string, string[]>();
    for (let i = 0; i < PER_CONVERSATION; i++) {
      await Promise.all(users.map(async (waId, u) => {
        const body = `k${u}-m${i}`;
        await sendText(sys, waId, body);
        sent.set(waId, [...(sent.get(waId) ?? []), body]);
      }));
    }
    const claims = async () => {
      let n = 0;
      for (let s = 0; s < SHARDS; s++) n += await sys.ctx.redis.zcard(sys.ctx.keys.shardClaimed(s));
      return n;
    };
    const victim = spawnWorker();
    // Kill it while its drains hold claims on many conversations (a batch in flight), before it is done.
    let atKill = 0;
    await waitFor(async () => (atKill = await claims()) >= 8, 'drains claiming many conversations at once', 60_000, 5);
    victim.kill('SIGKILL');
    await new Promise((r) => victim.once('exit', r));
    const deliveredAtKill = (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).reduce((n, m) => n + m.length, 0);
    expect(atKill).toBeGreaterThanOrEqual(8);
    expect(deliveredAtKill).toBeLessThan(CONVERSATIONS * PER_CONVERSATION);
    spawnWorker();
    await waitFor(async () => (await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)))).every((m) => m.length === PER_CONVERSATION),
      'every device to show its messages', 120_000, 250);
    for (const waId of users) {
      const shown = await deviceMessages(sys.platformUrl, waId);
      expect(shown.map((m) => m.text?.body)).toEqual(sent.get(waId));
      expect(shown.every((m) => m.arrivals >= 1)).toBe(true);
      expect((await deviceStats(sys.platformUrl, waId)).key_reuse).toBe(0);
    }
    // The business hears of each message's delivery once it is in.
    const wamids = new Set(sys.receiver.statuses().filter((s) => s.status === 'delivered').map((s) => s.id));
    await waitFor(() => new Set(sys.receiver.statuses().filter((s) => s.status === 'delivered').map((s) => s.id)).size === CONVERSATIONS * PER_CONVERSATION,
      'a delivered status for every message', 60_000, 250);
    expect(wamids.size).toBeLessThanOrEqual(CONVERSATIONS * PER_CONVERSATION);
  }, 240_000);
});
