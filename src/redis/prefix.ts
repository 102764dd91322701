import { connectRedis, isCluster, scanEach } from './connect.ts';

/**
 * Deletes every key under `prefix` (and only those), with SCAN on every node: never a flush of a shared
 * database. On a cluster keys are unlinked one by one (a multi-key UNLINK must stay in one slot).
 */
export async function deleteByPrefix(url: string, prefix: string): Promise<void> {
  const r = connectRedis(url, { maxRetriesPerRequest: 3 });
  try {
    await scanEach(r, `${prefix}:*`, async (keys) => {
      if (isCluster(r)) await Promise.all(keys.map((k) => r.unlink(k)));
      else await r.unlink(...keys);
    });
  } finally {
    r.disconnect();
  }
}
