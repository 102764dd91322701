import type { Redis } from 'ioredis';
import type { Keys } from '../../store/keys.ts';
import { LuaScript } from '../lua/read-script.ts';

const RENEW = new LuaScript('renew-1.lua');
const RELEASE = new LuaScript('release-3.lua');

/** Another process holds the conversation's lease; the wake job should be retried. */
export class LeaseBusyError extends Error {
  constructor(readonly conversationId: string) {
    super('conversation lease held by another worker');
    this.name = 'LeaseBusyError';
  }
}

/** Takes the conversation's single-writer lease for `token` unless someone holds it (resolves null then). */
export function takeLease(redis: Redis, leaseKey: string, token: string, leaseMs: number): Promise<'OK' | null> {
  return redis.set(leaseKey, token, 'PX', leaseMs, 'NX');
}

/** Renews the lease every third of its duration until the returned function is called. */
export function keepLease(redis: Redis, leaseKey: string, token: string, leaseMs: number): () => void {
  // Keep the lease while a step waits on the network; a process that stalls longer loses it (fencing).
  const renew = setInterval(() => {
    RENEW.run(redis, [leaseKey], [token, String(leaseMs)]).catch(() => undefined);
  }, Math.max(1000, Math.floor(leaseMs / 3)));
  return () => clearInterval(renew);
}

/**
 * Gives the lease back if `token` still holds it, deleting the outbox too when `outboxDone` (release-3.lua);
 * answers how many events wait in the mailbox.
 */
export async function releaseLease(redis: Redis, keys: Keys, conversationId: string, token: string, outboxDone: boolean): Promise<number> {
  return Number(await RELEASE.run(redis, [keys.lease(conversationId), keys.outbox(conversationId), keys.mailbox(conversationId)], [token, outboxDone ? '1' : '']));
}
