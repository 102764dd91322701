import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import type { startPlatform } from '../../src/platform/server.ts';
import { ActorHost, type HostSinks } from '../../src/runtime/actor-host.ts';
import { conversationId } from '../../src/runtime/ids.ts';
import type { WakeJob } from '../../src/runtime/mailbox.ts';
import { OutboundService } from '../../src/runtime/outbound-service.ts';
import { ShardRunner } from '../../src/runtime/shard-runner.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import type { BusinessStore } from '../../src/store/businesses.ts';
import type { Keys } from '../../src/store/keys.ts';
import { startConversationWorker, type ConversationWorker } from '../../workers/conversation.ts';
import { createDevice, deviceMessages, waitFor } from '../helpers/devices.ts';
import { startHostWorld } from '../helpers/host-world.ts';
import { testRedisUrl } from '../helpers/redis.ts';

/**
 * A shard's wake-up job drains every ready conversation of the shard, each under its own lease: on real Redis,
 * BullMQ, libsignal and the real transport, a conversation waiting on the network does not hold up the rest
 * of its shard, and claims left by a drain that died are taken up again once they lapse.
 */
describe('shard runner', () => {
  let world: Awaited<ReturnType<typeof startHostWorld>>;
  let redis: Redis;
  let keys: Keys;
  let platform: Awaited<ReturnType<typeof startPlatform>>;
  let host: ActorHost;
  let outbound: OutboundService;
  let biz: Awaited<ReturnType<BusinessStore['create']>>;
  const stop: (() => Promise<void>)[] = [];
  const log = createLogger('test', 'silent');
  const sinks: HostSinks = { async webhook() {}, async timer() {}, async cancelTimer() {}, async purgeAt() {}, async cancelPurges() {}, async count() {} };

  beforeEach(async () => {
    world = await startHostWorld('shards');
    ({ redis, keys, platform } = world);
    host = new ActorHost(world.stores, keys, world.dataKeys, world.businesses, world.transport, sinks, log, { retentionMs: 3600e3, bundleRetryMs: 100, retransmitBaseMs: 60_000, retransmitMaxMs: 60_000 });
    outbound = new OutboundService(world.stores, keys, world.dataKeys, world.businesses, world.mailboxes, 3600e3);
    biz = await world.businesses.create({ name: 'Shards', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' });
  });

  afterEach(async () => {
    for (const s of stop.splice(0)) await s();
    await world.close();
  });

  /** `n` users (phone numbers not yet registered) whose conversations with the business share one shard. */
  async function usersInOneShard(n: number, base: number): Promise<{ waIds: string[]; shard: number }> {
    const byShard = new Map<number, string[]>();
    for (let i = 0; ; i++) {
      const waId = `1555${base + i}`;
      const shard = shardOf(await conversationId(world.dataKeys, biz.business_id, biz.phone_number_id, waId));
      const list = byShard.get(shard) ?? [];
      list.push(waId);
      byShard.set(shard, list);
      if (list.length === n) return { waIds: list, shard };
    }
  }

  async function send(waId: string, body: string) {
    const conv = await conversationId(world.dataKeys, biz.business_id, biz.phone_number_id, waId);
    await redis.set(keys.window(conv), String(Date.now() - 60_000), 'PX', 60_000);
    return outbound.accept({ businessId: biz.business_id, phoneNumberId: biz.phone_number_id, waId, message: { type: 'text', text: { body } } });
  }

  function startWorker(runner: ShardRunner): ConversationWorker {
    const worker = startConversationWorker({ connection: { url: testRedisUrl() } as never, prefix: keys.bullPrefix, queueName: keys.queueName('conversations'), shared: redis, keys, runner, concurrency: 4, log });
    stop.push(async () => {
      await worker.close();
      await runner.close();
    });
    return worker;
  }

  it('a conversation whose bundle fetch takes 5 s does not hold up the others in its shard', async () => {
    const { waIds } = await usersInOneShard(4, 7_000_000);
    for (const w of waIds) await createDevice(platform.url, `+${w}`);
    const [slow, ...others] = waIds as [string, ...string[]];
    // The transport answers this user's bundle request after 5 s; the others' at once.
    const fetchDeviceBundle = world.transport.fetchDeviceBundle.bind(world.transport);
    let slowAnswered = false;
    world.transport.fetchDeviceBundle = async (address: string, deviceId: number) => {
      if (address === slow) {
        await new Promise((r) => setTimeout(r, 5000));
        slowAnswered = true;
      }
      return fetchDeviceBundle(address, deviceId);
    };
    startWorker(new ShardRunner(world.stores, keys, host, world.mailboxes, log));
    await send(slow, 'slow one');
    await waitFor(async () => (await redis.zcard(keys.shardClaimed(shardOf(await conversationId(world.dataKeys, biz.business_id, biz.phone_number_id, slow))))) === 1, 'the slow conversation claimed');
    for (const w of others) await send(w, `for ${w}`);
    await waitFor(async () => (await Promise.all(others.map((w) => deviceMessages(platform.url, w)))).every((m) => m.length === 1), 'the others delivered', 4000, 50);
    // The others went through while the slow one still waited for its bundle.
    expect(slowAnswered).toBe(false);
    // A conversation of the shard that becomes ready after the shard's loop ended (the slow drain still runs)
    // gets a wake-up of its own.
    await send(others[0]!, 'second, while the slow one still waits');
    await waitFor(async () => (await deviceMessages(platform.url, others[0]!)).length === 2, 'the second message', 4000, 50);
    expect(slowAnswered).toBe(false);
    await waitFor(async () => (await deviceMessages(platform.url, slow)).length === 1, 'the slow one delivered at last', 15_000);
    expect((await deviceMessages(platform.url, slow))[0]).toMatchObject({ text: { body: 'slow one' }, arrivals: 1 });
  }, 30_000);

  it("a drain that died with its claims: they lapse with its leases and another process drains them, each message once", async () => {
    const { waIds, shard } = await usersInOneShard(3, 7_100_000);
    for (const w of waIds) await createDevice(platform.url, `+${w}`);
    for (const w of waIds) await send(w, `to ${w}`);
    // A process claims the shard's conversations and dies before draining them (claims lapse after 1 s here).
    const dead = new ShardRunner(world.stores, keys, { drainAndCheck: () => new Promise(() => {}) }, world.mailboxes, log, { leaseMs: 1000 });
    void dead.run(shard, null);
    await waitFor(async () => (await redis.zcard(keys.shardClaimed(shard))) === 3, 'the dead drain claimed all three');
    // The wake-up the marks pushed is gone with it (popped by the process that died).
    await redis.del(keys.wakeList('events'), keys.wakeList('sends'));
    expect(await redis.zcard(keys.shardReady(shard))).toBe(0);
    // Another process: its sweep finds the lapsed claims and wakes the shard.
    const runner = new ShardRunner(world.stores, keys, host, world.mailboxes, log, { leaseMs: 1000 });
    startWorker(runner);
    await waitFor(async () => {
      await runner.sweep();
      return (await Promise.all(waIds.map((w) => deviceMessages(platform.url, w)))).every((m) => m.length === 1);
    }, 'every message delivered by the other process', 15_000, 250);
    for (const w of waIds) expect((await deviceMessages(platform.url, w)).map((m) => [m.text?.body, m.arrivals])).toEqual([[`to ${w}`, 1]]);
    await waitFor(async () => (await redis.zcard(keys.shardClaimed(shard))) === 0, 'no claim left');
  }, 30_000);

  it('a wake-up job of the conversations queue, as an earlier version adds it, drains its shard (a rolling upgrade)', async () => {
    const { waIds, shard } = await usersInOneShard(2, 7_200_000);
    for (const w of waIds) await createDevice(platform.url, `+${w}`);
    for (const w of waIds) await send(w, `to ${w}`);
    // Only the job wakes the shard: the wake list's entry is dropped, the awake flag kept (no sweep here).
    await redis.del(keys.wakeList('events'), keys.wakeList('sends'));
    const queue = new Queue<WakeJob>(keys.queueName('conversations'), { connection: { url: testRedisUrl() } as never, prefix: keys.bullPrefix });
    stop.push(() => queue.close());
    await queue.add('wake', { shard }, { removeOnComplete: true });
    startWorker(new ShardRunner(world.stores, keys, host, world.mailboxes, log));
    await waitFor(async () => (await Promise.all(waIds.map((w) => deviceMessages(platform.url, w)))).every((m) => m.length === 1), 'both delivered', 10_000, 100);
    await waitFor(async () => (await queue.getJobCounts('waiting', 'active', 'prioritized')).active === 0, 'the job done');
  }, 30_000);

  it('the periodic sweep takes turns: of several processes, one sweeps in a period; the next period another may', async () => {
    const processes = [1, 2, 3].map(() => new ShardRunner(world.stores, keys, host, world.mailboxes, log));
    const t = Date.now();
    const swept = await Promise.all(processes.map((p) => p.sweepIfDue(60_000, t)));
    expect(swept.filter((s) => s !== null)).toHaveLength(1);
    // Within 0.8 of a period of that sweep, no one's turn; after it, the first to tick sweeps.
    expect(await processes[0]!.sweepIfDue(60_000, t + 47_000)).toBeNull();
    expect(await processes[2]!.sweepIfDue(60_000, t + 48_000)).not.toBeNull();
    expect(await processes[1]!.sweepIfDue(60_000, t + 48_500)).toBeNull();
    // The key stays between turns (a prefix's keys do not flicker with each period).
    expect(await redis.get(keys.sweepTurn())).toBe(String(t + 48_000));
  });
});
