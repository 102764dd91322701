import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { inject } from 'vitest';

/** The Redis URL the global setup resolved (the same resolution the product uses). */
export function testRedisUrl(): string {
  return inject('redisUrl');
}

/** A key prefix no other test (or user) shares: every key a test writes starts with it. */
export function testPrefix(tag = 't'): string {
  return `${tag}-${randomUUID().slice(0, 8)}`;
}

/** Deletes every key under `prefix` (and only those): tests never flush a database they share. */
export async function deletePrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { maxRetriesPerRequest: 3 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
