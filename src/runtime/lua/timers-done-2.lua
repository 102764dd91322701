--[[
  Removes timers whose events were posted, each only if it was not scheduled again meanwhile (same due time).

  Input:
    KEYS[1] the shard's timers
    KEYS[2] the shard's timer events
    ARGV    member, due time, member, due time, ...

  Output:
    how many were removed
]]
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + 1
  end
end
return removed
