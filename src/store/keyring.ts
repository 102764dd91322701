import type { Redis } from 'ioredis';

/**
 * A business's data keyring as Redis holds it: one hash at `Keys.dataKey(businessId)` (one key, so every
 * script below works on Redis Cluster):
 *
 * - `1`, `2`, ...: each version of the data key, wrapped by a master key (`<master key id>:<sealed key>`);
 * - `cur`: the newest version;
 * - `at:<n>`: when version n (n > 1) starts sealing, in ms since the epoch (see {@link DataKeys.rotate});
 * - `n:<n>`: how many values processes have sealed under version n (added up in batches).
 *
 * Before key versions the key held version 1 as a plain string; reads accept that, and every write converts
 * it to the hash first (one script, so no reader sees it half-converted).
 */
export interface StoredKeyring {
  /** Wrapped data key by version; version 1 is always there. */
  wrapped: Map<number, string>;
  /** When each version after the first starts sealing (ms since the epoch). */
  activeAt: Map<number, number>;
  /** Seals counted under each version, as flushed so far. */
  counts: Map<number, number>;
  newest: number;
}

/** Lua: converts a business's keyring stored in the old form (a string: version 1) to the hash, in place. */
const TO_HASH = `
local t = redis.call('TYPE', KEYS[1])
if (type(t) == 'table' and t.ok or t) == 'string' then
  local v = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '1', v, 'cur', '1')
end
`;

const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '1', ARGV[1], 'cur', '1')
return 1`;

// Compare-and-set: adds version cur+1 only if `cur` is still what the caller saw, so processes racing to
// rotate (automatic rotation after the same count) add one version, not one each.
const ADD_VERSION = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
${TO_HASH}
local cur = tonumber(redis.call('HGET', KEYS[1], 'cur') or '1')
if cur ~= tonumber(ARGV[1]) then return 0 end
local v = tostring(cur + 1)
redis.call('HSET', KEYS[1], v, ARGV[2], 'at:' .. v, ARGV[3], 'cur', v)
return cur + 1`;

// Never creates the keyring: counts arriving after a business was deleted must not bring its key back.
const ADD_COUNTS = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
${TO_HASH}
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[i], ARGV[i + 1]) end
out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], 'cur') or '1')
return out`;

// Each version is replaced only if still wrapped as the caller read it: a concurrent change is not overwritten.
const REWRAP = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
${TO_HASH}
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n`;

/** The keyring stored at `name`, or null when there is none (the business has no data key). */
export async function readKeyring(redis: Redis, name: string): Promise<StoredKeyring | null> {
  let row: Record<string, string>;
  try {
    row = await redis.hgetall(name);
  } catch (e) {
    if (!String((e as Error).message).startsWith('WRONGTYPE')) throw e;
    const v = await redis.get(name);
    row = v ? { '1': v } : {};
  }
  if (!row['1']) return null;
  const ring: StoredKeyring = { wrapped: new Map(), activeAt: new Map(), counts: new Map(), newest: Number(row.cur ?? 1) };
  for (const [field, value] of Object.entries(row)) {
    if (/^\d+$/.test(field)) ring.wrapped.set(Number(field), value);
    else if (field.startsWith('at:')) ring.activeAt.set(Number(field.slice(3)), Number(value));
    else if (field.startsWith('n:')) ring.counts.set(Number(field.slice(2)), Number(value));
  }
  return ring;
}

/** Stores a new keyring holding version 1; false (and nothing written) when the business already has one. */
export async function createKeyring(redis: Redis, name: string, wrappedV1: string): Promise<boolean> {
  return Number(await redis.eval(CREATE, 1, name, wrappedV1)) === 1;
}

/**
 * Adds version `expectedNewest + 1` if the newest is still `expectedNewest`: the new version, 'lost' when
 * another process added one first, 'gone' when there is no keyring.
 */
export async function addVersion(redis: Redis, name: string, expectedNewest: number, wrapped: string, activeAt: number): Promise<number | 'lost' | 'gone'> {
  const r = Number(await redis.eval(ADD_VERSION, 1, name, String(expectedNewest), wrapped, String(activeAt)));
  return r === -1 ? 'gone' : r === 0 ? 'lost' : r;
}

/** Adds seal counts per version; the new totals and the newest version, or null when there is no keyring. */
export async function addCounts(redis: Redis, name: string, counts: Map<number, number>): Promise<{ totals: Map<number, number>; newest: number } | null> {
  const args = [...counts].flatMap(([v, n]) => [String(v), String(n)]);
  const r = (await redis.eval(ADD_COUNTS, 1, name, ...args)) as number[] | null;
  if (!r) return null;
  return { totals: new Map([...counts.keys()].map((v, i) => [v, Number(r[i])])), newest: Number(r[r.length - 1]) };
}

/** Replaces wrapped versions `[version, as read, new]` still as read; how many were replaced. */
export async function rewrapVersions(redis: Redis, name: string, changes: [number, string, string][]): Promise<number> {
  return Number(await redis.eval(REWRAP, 1, name, ...changes.flatMap(([v, before, after]) => [String(v), before, after])));
}
