import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { BusinessStore, type BusinessInput } from '../../src/store/businesses.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { Stores } from '../../src/store/stores.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** The in-process caches of businesses and stores: what another process changed shows, and they stay bounded. */
describe('business and store caches', () => {
  const redis = new Redis(testRedisUrl());
  const prefix = testPrefix('bc');
  const keys = new Keys(prefix);
  const master = randomBytes(32);
  const input: BusinessInput = { name: 'Cache Co', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' };
  /** A process: its own data keys and business store on the shared Redis. */
  const processOf = () => new BusinessStore(redis, keys, new DataKeys(redis, keys, master, 30_000, () => Date.now()));
  afterEach(() => {
    vi.useRealTimers();
  });
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it("another process forgets a deleted business's number identities at its next check, and keeps live ones without unsealing again", async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const admin = processOf();
    const worker = processOf();
    const gone = await admin.create(input);
    const kept = await admin.create(input);
    const identity = await worker.identity(gone.phone_number_id);
    const keptIdentity = await worker.identity(kept.phone_number_id);
    await admin.delete(gone.business_id);
    await expect(admin.identity(gone.phone_number_id)).rejects.toThrow(/unknown phone number/);
    // Within the period the worker serves what it has without asking Redis.
    vi.setSystemTime(Date.now() + BusinessStore.identityCheckMs - 1);
    expect(await worker.identity(gone.phone_number_id)).toBe(identity);
    // At the check it finds the number gone and forgets the private key.
    vi.setSystemTime(Date.now() + 2);
    await expect(worker.identity(gone.phone_number_id)).rejects.toThrow(/unknown phone number/);
    await expect(worker.identity(gone.phone_number_id)).rejects.toThrow(/unknown phone number/);
    expect(await worker.identity(kept.phone_number_id)).toBe(keptIdentity);
  });

  it('another process forgets a number removed from its business at its next check', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const admin = processOf();
    const worker = processOf();
    const biz = await admin.create(input);
    const extra = await admin.addNumber(biz.business_id);
    await worker.identity(extra.phone_number_id);
    await admin.removeNumber(biz.business_id, extra.phone_number_id);
    vi.setSystemTime(Date.now() + BusinessStore.identityCheckMs);
    await expect(worker.identity(extra.phone_number_id)).rejects.toThrow(/unknown phone number/);
  });

  it('bounds every cache of a business store and of the stores: more entries than the bound, never more held', async () => {
    const [businessMax, storesMax] = [BusinessStore.cacheMax, Stores.cacheMax];
    BusinessStore.cacheMax = 3;
    Stores.cacheMax = 3;
    const stores = new Stores(redis, keys, { eu: testRedisUrl() });
    try {
      const store = processOf();
      const created = [];
      for (let i = 0; i < 5; i++) created.push(await store.create(input));
      for (const c of created) {
        await store.phoneNumber(c.phone_number_id);
        await store.phoneNumberByDisplay(c.display_phone_number);
        await store.identity(c.phone_number_id);
        await store.retentionMs(c.business_id, 60_000);
        await stores.forBusiness(store, c.business_id);
        await stores.forConversation(`conv-${c.phone_number_id}`);
      }
      const sizes = (o: object, names: string[]) => names.map((n) => (o as Record<string, { size: number }>)[n]!.size);
      expect(sizes(store, ['numbers', 'displays', 'identities', 'retentions'])).toEqual([3, 3, 3, 3]);
      expect(sizes(stores, ['convCache', 'bizCache'])).toEqual([3, 3]);
      // The least recently used went; the newest are still served.
      expect(await store.identity(created[4]!.phone_number_id)).toBe(await store.identity(created[4]!.phone_number_id));
    } finally {
      BusinessStore.cacheMax = businessMax;
      Stores.cacheMax = storesMax;
      stores.close();
    }
  });
});
