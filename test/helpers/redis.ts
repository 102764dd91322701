import { randomUUID } from 'node:crypto';
import { deleteByPrefix } from '../../src/redis/prefix.ts';
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
export const deletePrefix = deleteByPrefix;
