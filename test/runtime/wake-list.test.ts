import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { releaseLease, takeLease } from '../../src/runtime/host/lease.ts';
import { Mailboxes } from '../../src/runtime/mailbox.ts';
import { ShardRunner } from '../../src/runtime/shard-runner.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import { decodeWake, encodeWake, WakeListener, type ShardLoop } from '../../src/runtime/wake-list.ts';
import { Keys } from '../../src/store/keys.ts';
import { Stores } from '../../src/store/stores.ts';
import { waitFor } from '../helpers/devices.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** A conversation id that hashes into `shard`. */
function idInShard(tag: string, shard: number): string {
  for (let i = 0; ; i++) if (shardOf(`${tag}-${i}`) === shard) return `${tag}-${i}`;
}

/**
 * The wake list: how a shard with ready conversations reaches a worker process (src/runtime/wake-list.ts).
 * Real Redis; the shard loops are recorded (or, for the lost wake-up, the real runner with a recorded drain).
 */
describe('wake list', () => {
  const prefix = testPrefix('wakelist');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const stores = new Stores(redis, keys, {}, defineCommitScript);
  const log = createLogger('test', 'silent');
  const closing: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closing.splice(0)) await c();
    await redis.del(keys.wakeList('events'), keys.wakeList('sends'));
  });
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  const listen = (loop: ShardLoop, concurrency: number) => {
    const listener = new WakeListener(redis, keys, loop, concurrency, log).start();
    closing.push(() => listener.close());
    return listener;
  };

  it('reads back what it writes, region and trace context included, and refuses what is not a wake-up', () => {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    expect(decodeWake(encodeWake({ shard: 7, region: null, at: 5 }))).toEqual({ shard: 7, region: null, at: 5 });
    expect(decodeWake(encodeWake({ shard: 63, region: 'eu|west', at: 1796321618727, tp }))).toEqual({ shard: 63, region: 'eu|west', at: 1796321618727, tp });
    for (const bad of ['', '7', '7|1', '7|1|', 'x|1||', '64|1||', '-1|1||', '1.5|1||', '1|||', '1|x||']) expect(decodeWake(bad), bad).toBeNull();
  });

  it('runs the events lane before the sends lane, skips an unreadable entry and goes on', async () => {
    await redis.rpush(keys.wakeList('sends'), encodeWake({ shard: 9, region: null, at: Date.now() }));
    await redis.rpush(keys.wakeList('events'), 'not a wake-up', encodeWake({ shard: 3, region: null, at: Date.now() }), encodeWake({ shard: 4, region: 'eu', at: Date.now() }));
    const ran: string[] = [];
    listen({ async run(shard, region) { ran.push(`${region ?? ''}:${shard}`); return 0; } }, 1);
    await waitFor(() => ran.length === 3, 'three loops');
    expect(ran).toEqual([':3', 'eu:4', ':9']);
    expect(await redis.llen(keys.wakeList('events'))).toBe(0);
  });

  it('runs at most its concurrency of shard loops at once, leaving the rest on the list for other processes', async () => {
    for (let s = 0; s < 5; s++) await redis.rpush(keys.wakeList('events'), encodeWake({ shard: s, region: null, at: Date.now() }));
    let active = 0;
    let most = 0;
    let started = 0;
    const release: (() => void)[] = [];
    listen({
      async run() {
        started++;
        active++;
        most = Math.max(most, active);
        await new Promise<void>((r) => release.push(r));
        active--;
        return 1;
      },
    }, 2);
    await waitFor(() => started === 2, 'two loops running');
    await new Promise((r) => setTimeout(r, 300));
    expect(started).toBe(2);
    expect(await redis.llen(keys.wakeList('events'))).toBe(3);
    // Each loop that ends makes room for the next.
    while (started < 5) {
      release.shift()?.();
      await new Promise((r) => setTimeout(r, 30));
    }
    for (const r of release.splice(0)) r();
    await waitFor(() => active === 0, 'every loop ended');
    expect(await redis.llen(keys.wakeList('events'))).toBe(0);
    expect(most).toBe(2);
  });

  it('a shard loop that fails does not stop the listener', async () => {
    await redis.rpush(keys.wakeList('events'), encodeWake({ shard: 1, region: null, at: Date.now() }), encodeWake({ shard: 2, region: null, at: Date.now() }));
    const ran: number[] = [];
    listen({
      async run(shard) {
        ran.push(shard);
        if (shard === 1) throw new Error('Redis went away');
        return 0;
      },
    }, 1);
    await waitFor(() => ran.length === 2, 'both loops');
  });

  it('a wake-up lost with the process that popped it: the sweep wakes the shard once its awake flag lapses', async () => {
    const mailboxes = new Mailboxes(stores, keys);
    const conv = idInShard('lost', 21);
    await mailboxes.wake(conv);
    expect(await redis.get(keys.shardAwake(21))).toBe('e');
    // Popped by a process that died before its loop's first claim.
    expect(await redis.lpop(keys.wakeList('events'))).toMatch(/^21\|/);
    const drained: string[] = [];
    const runner = new ShardRunner(stores, keys, { async drainAndCheck(c) { drained.push(c); return { handled: 1, pending: false }; } }, mailboxes, log);
    closing.push(() => runner.close());
    listen(runner, 4);
    // Long since ready, but a wake-up counts as waiting while the flag lasts: the sweep leaves the shard.
    const later = Date.now() + 60_000;
    expect(await runner.sweep(later)).toBe(0);
    expect(await redis.llen(keys.wakeList('events'))).toBe(0);
    // The flag lapses (shortened here): the next sweep wakes the shard, once however many processes sweep.
    await redis.pexpire(keys.shardAwake(21), 1);
    await new Promise((r) => setTimeout(r, 20));
    const woken = await Promise.all([runner.sweep(later), runner.sweep(later)]);
    expect(woken.reduce((a, b) => a + b, 0)).toBe(1);
    await waitFor(() => drained.length === 1, 'the conversation drained');
    expect(drained).toEqual([conv]);
  });

  it("a wake-up of a shard whose loop runs in this process makes that loop look once more, never a second loop", async () => {
    const mailboxes = new Mailboxes(stores, keys);
    const [a, b] = [idInShard('again-a', 30), idInShard('again-b', 30)];
    let inside = 0;
    let most = 0;
    const order: string[] = [];
    let runner!: ShardRunner;
    runner = new ShardRunner(stores, keys, {
      async drainAndCheck(c) {
        inside++;
        most = Math.max(most, inside);
        order.push(c);
        if (c === a) {
          // Marked and woken while the loop is busy with a: the second wake only sets the loop looking again.
          await mailboxes.wake(b);
          expect(await runner.run(30, null)).toBe(0);
        }
        inside--;
        return { handled: 1, pending: false };
      },
    }, mailboxes, log, { perShard: 1 });
    closing.push(() => runner.close());
    await mailboxes.wake(a);
    await redis.del(keys.wakeList('events'));
    expect(await runner.run(30, null)).toBe(2);
    expect(order).toEqual([a, b]);
    expect(most).toBe(1);
  });

  it('an event posted while a drain holds the lease is left to that drain: no mark; its release counts it', async () => {
    const mailboxes = new Mailboxes(stores, keys);
    const conv = idInShard('leased', 40);
    expect(await takeLease(redis, keys.lease(conv), 'drain-1', 10_000)).toBe('OK');
    await mailboxes.post(conv, [{ type: 'PURGE_DUE', at: 1 }], 60_000);
    expect(await redis.zcard(keys.shardReady(40))).toBe(0);
    expect(await redis.llen(keys.wakeList('events'))).toBe(0);
    // The drain's release answers what waits (the runner then has the conversation claimed again).
    expect(await releaseLease(redis, keys, conv, 'drain-1', true)).toBe(1);
    // No lease: the next post marks it and wakes its shard.
    await mailboxes.post(conv, [{ type: 'PURGE_DUE', at: 2 }], 60_000);
    expect(await redis.zrange(keys.shardReady(40), '0', '-1')).toEqual([conv]);
    expect((await redis.lrange(keys.wakeList('events'), 0, -1)).map((e) => decodeWake(e)?.shard)).toEqual([40]);
  });
});
