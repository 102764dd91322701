import type { Redis } from 'ioredis';

/**
 * Redis's refusals to write that pass once Redis has room or a master again: out of memory under
 * `noeviction`, a read-only replica, a failed RDB save (`stop-writes-on-bgsave-error`), a dataset still
 * loading, a cluster slot moving or down.
 */
const REFUSALS = /^(OOM|READONLY|MISCONF|LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|BUSY)\b/;

/** Whether an error is Redis refusing a command for now (the caller should come back later), not a bug. */
export function isStoreRefusal(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { message?: unknown; previousErrors?: unknown };
  if (typeof e.message === 'string' && REFUSALS.test(e.message)) return true;
  // A MULTI whose commands were refused fails as EXECABORT, the refusals inside it.
  return Array.isArray(e.previousErrors) && e.previousErrors.some((p) => isStoreRefusal(p));
}

/**
 * What Redis's settings put at risk, as lines for an operator: no persistence at all (a restart loses every
 * accepted message, session and queued job) and an eviction policy that may drop keys under memory pressure
 * (Sealpost needs `noeviction`: it then answers 503 until memory is freed, losing nothing). Settings this
 * client may not read (CONFIG disabled on a managed Redis) are named as unknown rather than guessed.
 */
export async function redisSettingsWarnings(redis: Redis): Promise<string[]> {
  const warnings: string[] = [];
  let config: Record<string, string>;
  try {
    const pairs = (await redis.config('GET', 'appendonly')) as string[];
    pairs.push(...((await redis.config('GET', 'save')) as string[]), ...((await redis.config('GET', 'maxmemory-policy')) as string[]));
    config = Object.fromEntries(pairs.reduce<[string, string][]>((acc, v, i) => (i % 2 ? acc : [...acc, [v, pairs[i + 1]!]]), []));
  } catch (e) {
    // CONFIG is often disabled on managed Redis; INFO tells the AOF and the policy there.
    try {
      const info = `${await redis.info('persistence')}\n${await redis.info('memory')}`;
      const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
      config = { appendonly: field('aof_enabled') === '1' ? 'yes' : 'no', 'maxmemory-policy': field('maxmemory_policy') ?? '' };
      warnings.push(`could not read Redis's RDB save schedule (CONFIG GET: ${(e as Error).message.slice(0, 80)}); make sure it persists`);
    } catch {
      return [`could not read Redis's persistence and eviction settings: ${(e as Error).message.slice(0, 120)}`];
    }
  }
  if (config.appendonly !== 'yes' && config.save !== undefined && config.save.trim() === '') {
    warnings.push('Redis persists nothing (appendonly no, no RDB save points): a Redis restart loses every accepted message, session and queued job; enable appendonly (docs/operations.md)');
  }
  const policy = config['maxmemory-policy'];
  if (policy && policy !== 'noeviction') {
    warnings.push(`Redis maxmemory-policy is ${policy}: under memory pressure Redis deletes keys (messages, sessions, queue jobs) without telling anyone; set noeviction (docs/operations.md)`);
  }
  return warnings;
}
