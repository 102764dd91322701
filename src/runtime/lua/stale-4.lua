--[[
  Whether a shard needs a wake-up nobody gave it (a producer that died between its ready mark and its wake,
  a wake-up lost with a process that popped it and died, a claim abandoned by a crashed drain or lapsed for a
  retry), and when its earliest timer is due (a timer due with no tick job). A shard whose awake flag is set
  has a wake-up waiting already: none is asked for until the flag is cleared (by that wake-up's first claim)
  or lapses (its wake-up was lost). When one is asked for, the flag is set here, so that of the processes
  sweeping, and of the marks made meanwhile, one pushes it.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's claimed set
    KEYS[3] the shard's timers
    KEYS[4] the shard's awake flag (mark-2.lua)
    ARGV[1] now (ms)
    ARGV[2] ready since before this (ms) counts as forgotten
    ARGV[3] the sends lane's offset (src/runtime/shards.ts)
    ARGV[4] how long the awake flag lasts (ms)

  Output:
    { wake the shard (0/1), the earliest timer's due time or -1 }
]]
local wake = 0
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[1] then
  local score = tonumber(first[2])
  if score >= tonumber(ARGV[3]) then score = score - tonumber(ARGV[3]) end
  if score <= tonumber(ARGV[2]) then wake = 1 end
end
if wake == 0 and redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1)[1] then
  wake = 1
end
if wake == 1 then
  if redis.call('SET', KEYS[4], 'e', 'NX', 'PX', ARGV[4]) then
    wake = 1
  else
    wake = 0
  end
end
local timer = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return { wake, timer[2] or '-1' }
