import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startPlatform } from '../../src/platform/server.ts';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { Mailboxes } from '../../src/runtime/mailbox.ts';
import { TransportClient } from '../../src/runtime/transport-client.ts';
import { BusinessStore } from '../../src/store/businesses.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { Stores } from '../../src/store/stores.ts';
import { deletePrefix, testPrefix, testRedisUrl } from './redis.ts';

/**
 * What an actor host runs on in the runtime tests: the test Redis under a prefix of its own, a real platform
 * (transport and devices) on a free port, and the stores and mailboxes over them. `close()`
 * deletes what the prefix holds and stops the platform.
 */
export async function startHostWorld(name: string) {
  const prefix = testPrefix(name);
  const redis = new Redis(testRedisUrl());
  const keys = new Keys(prefix);
  const dataKeys = new DataKeys(redis, keys, randomBytes(32));
  const businesses = new BusinessStore(redis, keys, dataKeys);
  const platform = await startPlatform({ port: 0 });
  const transport = new TransportClient(platform.url);
  const stores = new Stores(redis, keys, {}, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys);
  return {
    prefix, redis, keys, dataKeys, businesses, platform, transport, stores, mailboxes,
    async close() {
      await platform.close();
      await deletePrefix(testRedisUrl(), prefix);
      redis.disconnect();
    },
  };
}
