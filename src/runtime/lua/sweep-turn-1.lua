--[[
  Whose turn it is to sweep the shards: the caller's if the last sweep (by any process) began at least
  ARGV[2] ms before ARGV[1]; the key then holds the caller's time. The key stays (its TTL renewed by every
  turn taken) rather than come and go each period: what is stored under the prefix does not flicker.

  Input:
    KEYS[1] the sweep turn (string: when the last sweep began, ms)
    ARGV[1] now (ms, the caller's clock)
    ARGV[2] the least time between two sweeps (ms)
    ARGV[3] the key's TTL (ms): gone some time after the last worker stopped

  Output:
    1 the caller sweeps now, 0 not its turn
]]
local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) - last < tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
