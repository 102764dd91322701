--[[
  Whether a shard needs a wake-up nobody gave it (a producer that died between its ready mark and its wake,
  a claim abandoned by a crashed drain or lapsed for a retry, a timer due with no tick job).

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's claimed set
    KEYS[3] the shard's timers
    ARGV[1] now (ms)
    ARGV[2] ready since before this (ms) counts as forgotten
    ARGV[3] the sends lane's offset (src/runtime/shards.ts)

  Output:
    { ready or claims to wake for (0/1), the earliest timer's due time or -1 }
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
local timer = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return { wake, timer[2] or '-1' }
