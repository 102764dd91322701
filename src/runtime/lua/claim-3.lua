--[[
  Claims up to ARGV[2] of a shard's ready conversations for a drain: pops those ready longest (lowest
  score: receipts, replies and timers before newly accepted sends) and marks them claimed until ARGV[3], when
  they count as abandoned (a crashed drain). A wake-up loop's first claim also puts claims abandoned before
  ARGV[1] back in the ready set (a shard with such claims is woken by the runner's sweep), and clears the
  shard's awake flag (mark-2.lua): its wake-up no longer waits, so the next mark pushes another.

  Input:
    KEYS[1] the shard's ready set
    KEYS[2] the shard's claimed set
    KEYS[3] the shard's awake flag
    ARGV[1] now (ms)
    ARGV[2] how many to claim at most
    ARGV[3] until when the claims hold (ms)
    ARGV[4] '1' on a wake-up loop's first claim: return abandoned claims, clear the awake flag

  Output:
    the claimed conversation ids, in claim order
]]
local now = tonumber(ARGV[1])
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  local abandoned = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)
  for _, id in ipairs(abandoned) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], 'LT', now, id)
  end
end
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
local claimed, args = {}, {}
for i = 1, #popped, 2 do
  claimed[#claimed + 1] = popped[i]
  args[#args + 1] = ARGV[3]
  args[#args + 1] = popped[i]
end
if #args > 0 then
  redis.call('ZADD', KEYS[2], unpack(args))
end
return claimed
