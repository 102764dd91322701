import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';

/**
 * Accounting of a business's stored media against its quota, in the business's own store: a sorted set of
 * media ids scored by when they expire, and a hash of their sizes with the running total in field `t`. Media
 * leave by TTL without telling anyone, so every reservation first drops the entries whose time has passed;
 * deletions release theirs at once. Both keys carry the tag `{mq:<business>}` (one cluster slot, one script),
 * and themselves expire when the last file they count does, so an idle business leaves nothing behind.
 *
 * Bounded drift: a process dying between a reservation and the write of the file (or between a deletion and
 * its release) counts bytes that are not there, until that entry's expiry; never the other way round.
 */

/** Drops expired entries from the total (KEYS[1] expiries, KEYS[2] sizes; ARGV[1] now); shared by both scripts. */
const PRUNE = `
local function prune(now)
  local total = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
  while true do
    local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
    if #gone == 0 then break end
    for _, id in ipairs(gone) do total = total - tonumber(redis.call('HGET', KEYS[2], id) or '0') end
    redis.call('HDEL', KEYS[2], unpack(gone))
    redis.call('ZREM', KEYS[1], unpack(gone))
  end
  -- Nothing counted means nothing used, whatever an interrupted writer left in the total.
  if total < 0 or redis.call('ZCARD', KEYS[1]) == 0 then total = 0 end
  return total
end
-- Writes the total back, or drops it with the last entry (a total alone would have no expiry).
local function store_total(total)
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[2], 't', total) else redis.call('DEL', KEYS[2]) end
end
`;

/** ARGV: now, id, size, expires at (ms), quota. Answers {1, total after} or {0, total before}. */
const RESERVE_LUA = `${PRUNE}
local total = prune(ARGV[1])
-- An id counted already (a retried write) is counted once, at its new size.
total = total - tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local size = tonumber(ARGV[3])
if total + size > tonumber(ARGV[5]) then
  store_total(total)
  return {0, total}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], size, 't', total + size)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return {1, total + size}
`;

/** ARGV: now, ids... Releases the ids' bytes (ids not counted are skipped); answers the total after. */
const RELEASE_LUA = `${PRUNE}
local total = prune(ARGV[1])
for i = 2, #ARGV do
  local size = redis.call('HGET', KEYS[2], ARGV[i])
  if size then
    total = total - tonumber(size)
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  redis.call('ZREM', KEYS[1], ARGV[i])
end
if total < 0 then total = 0 end
store_total(total)
return total
`;

/** The business's media would exceed its quota; nothing was stored. */
export class MediaQuotaError extends Error {
  constructor(readonly quotaBytes: number, readonly usedBytes: number, readonly fileBytes: number) {
    super(`the business's media quota of ${quotaBytes} bytes is reached: ${usedBytes} bytes are stored and this file has ${fileBytes}`);
    this.name = 'MediaQuotaError';
  }
}

/** Reserves and releases a business's media bytes against its quota (see the module comment). */
export class MediaQuota {
  constructor(private readonly keys: Keys, readonly quotaBytes: number, private readonly now: () => number = Date.now) {}

  /** Counts `size` bytes for media `id` until `expiresAt`; throws {@link MediaQuotaError} (counting nothing) past the quota. */
  async reserve(redis: Redis, businessId: string, id: string, size: number, expiresAt: number): Promise<void> {
    const [ok, used] = (await redis.eval(
      RESERVE_LUA, 2, this.keys.mediaExpiries(businessId), this.keys.mediaSizes(businessId),
      String(this.now()), id, String(size), String(expiresAt), String(this.quotaBytes),
    )) as [number, number];
    if (!ok) throw new MediaQuotaError(this.quotaBytes, Number(used), size);
  }

  /** Stops counting the ids' bytes (deleted media); ids not counted are ignored. */
  async release(redis: Redis, businessId: string, ids: string[]): Promise<void> {
    if (!ids.length) return;
    await redis.eval(RELEASE_LUA, 2, this.keys.mediaExpiries(businessId), this.keys.mediaSizes(businessId), String(this.now()), ...ids);
  }

  /** The bytes the business's unexpired media take (after dropping expired entries). */
  async used(redis: Redis, businessId: string): Promise<number> {
    return Number(await redis.eval(RELEASE_LUA, 2, this.keys.mediaExpiries(businessId), this.keys.mediaSizes(businessId), String(this.now())));
  }
}
