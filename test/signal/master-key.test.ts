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
    expect(await redis.get(keys.dataKey('b1'))).toMatch(new RegExp(`^${masterKeyId(oldKey)}:v1\\.`));
    // Step 1: every process gets the new key first and the old one after it; nothing changes on disk yet.
    const during = new DataKeys(redis, keys, [newKey, oldKey]);
    expect(await during.get('b1')).toEqual(dk1);
    // Step 2: re-wrap.
    expect(await during.rewrapAll()).toBe(2);
    expect(await during.rewrapAll()).toBe(0);
    expect(await redis.get(keys.dataKey('b2'))).toMatch(new RegExp(`^${masterKeyId(newKey)}:`));
    // Step 3: the old key can go; the same data keys come out, so no stored value needs rewriting.
    const after = new DataKeys(redis, keys, newKey);
    expect(await after.get('b1')).toEqual(dk1);
    expect(await after.get('b2')).toEqual(dk2);
    await expect(new DataKeys(redis, keys, oldKey).get('b1')).rejects.toThrow(SealError);
  });
});
