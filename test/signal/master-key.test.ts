import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys, masterKeyId, SealError } from '../../src/store/sealer.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

describe('master key rotation', () => {
  const redis = new Redis(testRedisUrl());
  const prefix = testPrefix('mk');
  const keys = new Keys(prefix);
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('re-wraps data keys without changing them; processes with both keys keep working throughout', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const before = new DataKeys(redis, keys, oldKey);
    await redis.sadd(keys.businesses, 'b1', 'b2');
    const dk1 = await before.create('b1');
    const dk2 = await before.create('b2');
    expect(await redis.hget(keys.dataKey('b1'), '1')).toMatch(new RegExp(`^${masterKeyId(oldKey)}:v1\\.`));
    // Step 1: every process gets the new key first and the old one after it; nothing changes on disk yet.
    const during = new DataKeys(redis, keys, [newKey, oldKey]);
    expect(await during.get('b1')).toEqual(dk1);
    // Step 2: re-wrap.
    expect(await during.rewrapAll()).toBe(2);
    expect(await during.rewrapAll()).toBe(0);
    expect(await redis.hget(keys.dataKey('b2'), '1')).toMatch(new RegExp(`^${masterKeyId(newKey)}:`));
    // Step 3: the old key can go; the same data keys come out, so no stored value needs rewriting.
    const after = new DataKeys(redis, keys, newKey);
    expect(await after.get('b1')).toEqual(dk1);
    expect(await after.get('b2')).toEqual(dk2);
    await expect(new DataKeys(redis, keys, oldKey).get('b1')).rejects.toThrow(SealError);
  });

  it('a data key destroyed by one process is forgotten by the others at their next check', async () => {
    const keys = new Keys(`${prefix}:shred`);
    const master = randomBytes(32);
    let now = 1_000_000;
    const clock = () => now;
    const admin = new DataKeys(redis, keys, master, 30_000, clock);
    const worker = new DataKeys(redis, keys, master, 30_000, clock);
    const dk = await admin.create('gone');
    expect(await worker.get('gone')).toEqual(dk);
    // Within the period the worker serves its cached copy without asking Redis.
    await admin.destroy('gone');
    await expect(admin.get('gone')).rejects.toThrow(SealError);
    now += 29_999;
    expect(await worker.get('gone')).toEqual(dk);
    // At the check it finds the wrapped key gone, forgets its copy and refuses from then on.
    now += 2;
    await expect(worker.get('gone')).rejects.toThrow(/no data key/);
    await expect(worker.get('gone')).rejects.toThrow(/no data key/);
    // A key that still exists is kept across checks (and a re-wrap elsewhere does not change it).
    const kept = await admin.create('kept');
    expect(await worker.get('kept')).toEqual(kept);
    await redis.sadd(keys.businesses, 'kept');
    await new DataKeys(redis, keys, [randomBytes(32), master]).rewrapAll();
    now += 60_000;
    expect(await worker.get('kept')).toEqual(kept);
  });
});
